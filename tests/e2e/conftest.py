"""A real local trust space for end-to-end tests: processes, ports, HTTPS, on either backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mssante import demo
from support import (
    drop_schema,
    free_port_block,
    is_postgres,
    new_schema_name,
    selected_database_url,
)


@pytest.fixture
def trust_space(tmp_path: Path) -> Iterator[tuple[demo.DemoLayout, dict[str, Any]]]:
    """PKI, authority and two operators configured and registered; nothing started yet."""
    schemas: list[str] = []

    def database_for(node: str) -> dict[str, str]:
        schema = new_schema_name()
        schemas.append(schema)
        return {"url": selected_database_url(), "schema_name": schema}

    layout = demo.DemoLayout(root=tmp_path / "space", base_port=free_port_block())
    info = demo.build(layout, database_for if is_postgres() else None)
    yield layout, info
    demo.stop(layout)
    for schema in schemas:
        drop_schema(schema)


StartFn = Callable[[demo.DemoLayout, dict[str, Any]], None]
