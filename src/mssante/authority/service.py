"""Authority operations shared by the command line and the JSON API: change, then re-publish."""

from __future__ import annotations

from pathlib import Path

from mssante.audit.events import AuditEvent, AuditRecord
from mssante.authority.publish import Release, Signer, publish
from mssante.authority.registry import Actor, OperatorSpec, OperatorView, Registry
from mssante.runtime import Node


def published_dir(node: Node) -> Path:
    return node.settings.data_dir / "published"


class AuthorityService:
    def __init__(self, node: Node, signer: Signer) -> None:
        self.node = node
        self.signer = signer
        self.registry = Registry(node.db)

    def register(self, spec: OperatorSpec, actor: Actor) -> tuple[OperatorView, Release]:
        view = self.registry.register(spec, actor)
        return view, self.publish(actor)

    def remove(self, name: str, actor: Actor) -> Release:
        self.registry.remove(name, actor)
        return self.publish(actor)

    def publish(self, actor: Actor) -> Release:
        release = publish(self.registry.whitelist(), self.signer, published_dir(self.node))
        self.node.audit.record(
            AuditRecord(
                AuditEvent.WHITELIST_PUBLISHED,
                actor=actor.name,
                target=release.folder.name,
                context={**actor.context, "sha256": release.sha256, "domains": release.domains},
            )
        )
        return release
