"""The client-facing endpoints of this operator: IMAP and submission, each with implicit TLS and
with STARTTLS, as the settings say. The autoconfig document and the SRV records both read them,
so the two never disagree.

Order and preference: implicit TLS first (RFC 8314 §3: "Implicit TLS" is preferred for
submission and access), STARTTLS second (the ports the MSSanté client référentiel names: 143 and
587). A port set to 0 is a listener turned off: the endpoint is not offered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mssante.config import Settings


class Service(StrEnum):
    IMAP = "imap"
    SUBMISSION = "submission"


class Security(StrEnum):
    """How TLS starts; the values are Thunderbird's ``socketType`` words."""

    IMPLICIT_TLS = "SSL"
    STARTTLS = "STARTTLS"


@dataclass(frozen=True)
class Endpoint:
    service: Service
    hostname: str
    port: int  # 0: not offered
    security: Security

    @property
    def offered(self) -> bool:
        return self.port > 0

    @property
    def srv_name(self) -> str:
        """RFC 6186 §3.1-3.2 service labels; ``_submissions`` is RFC 8314 §5.1's."""
        implicit = "s" if self.security is Security.IMPLICIT_TLS else ""
        return f"_{self.service.value}{implicit}._tcp"

    @property
    def srv_priority(self) -> int:
        """Lower is preferred; RFC 6186 §3.4 compares priorities across _imap and _imaps (and
        RFC 8314 §5.1 across _submission and _submissions): implicit TLS first (RFC 8314 §3)."""
        return 0 if self.security is Security.IMPLICIT_TLS else 10


def client_endpoints(settings: Settings) -> tuple[Endpoint, ...]:
    """Every endpoint, offered or not, implicit TLS before STARTTLS for each service."""
    imap_host, imap_port, imaps_port = _imap(settings)
    smtp_host = settings.smtp_hostname()
    return (
        Endpoint(Service.IMAP, imap_host, imaps_port, Security.IMPLICIT_TLS),
        Endpoint(Service.IMAP, imap_host, imap_port, Security.STARTTLS),
        Endpoint(
            Service.SUBMISSION, smtp_host, settings.smtp.submissions_port, Security.IMPLICIT_TLS
        ),
        Endpoint(Service.SUBMISSION, smtp_host, settings.smtp.submission_port, Security.STARTTLS),
    )


def _imap(settings: Settings) -> tuple[str, int, int]:
    """IMAP host name and ports: the ``[imap]`` ports; one host serves IMAP and submission
    (one program), so the SMTP host name."""
    return settings.smtp_hostname(), settings.imap.port, settings.imap.tls_port
