"""The autoconfiguration HTTP app: Thunderbird's two ISP locations, for our domains only.

Thunderbird asks, for ``someone@example.org`` (FetchConfig.sys.mjs, ``fetchConfigFromISP``):

- ``https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=someone%40example.org``
- ``https://example.org/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=…``

(then the same over plain HTTP unless the user forbade it). Both paths answer here. The domain
is taken from ``emailaddress`` when present, else from the ``Host`` header (``autoconfig.``
stripped). Anything but one of the operator's domains gets a fixed 404: the answer never
depends on the request beyond choosing among documents made at start-up from the settings.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from mssante.autoconfig.document import config_xml
from mssante.config import Settings

PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
MEDIA_TYPE = "application/xml"
HEADERS = {
    "Cache-Control": "public, max-age=3600",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


def create_autoconfig_app(settings: Settings) -> Starlette:
    """An ASGI app answering the autoconfig requests for ``settings.operator.domains``."""
    documents = {
        _clean(domain): config_xml(settings, _clean(domain)) for domain in settings.operator.domains
    }

    async def config(request: Request) -> Response:
        domain = requested_domain(request, frozenset(documents))
        if domain is None:
            return PlainTextResponse("not found\n", status_code=404, headers=HEADERS)
        return Response(documents[domain], media_type=MEDIA_TYPE, headers=HEADERS)

    return Starlette(routes=[Route(path, config, methods=["GET"]) for path in PATHS])


def requested_domain(request: Request, ours: frozenset[str]) -> str | None:
    """The domain asked about, if it is one of ``ours``."""
    address = request.query_params.get("emailaddress")
    if address is not None:
        local, at, domain = address.strip().rpartition("@")
        candidate = _clean(domain) if at and local else ""
    else:
        candidate = _host_domain(request.headers.get("host", ""))
    return candidate if candidate in ours else None


def _host_domain(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # an IPv6 literal is never one of our domains
        return ""
    return _clean(host.rsplit(":", 1)[0]).removeprefix("autoconfig.")


def _clean(domain: str) -> str:
    return domain.strip().lower().rstrip(".")
