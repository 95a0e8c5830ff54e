"""The trust space's whitelist (liste blanche): its model, XML format, signature and keeper.

- :mod:`.model`: :class:`Whitelist` and :meth:`Whitelist.is_trusted` (domain + certificate DN).
- :mod:`.xmlformat`: the authority's real XML format, parsed safely and written exactly.
- :mod:`.signature`: the detached CMS signature published next to the list (``.p7s``).
- :mod:`.keeper`: the operator's current list, verified, cached, kept when a refresh fails.

See docs/trust.md.
"""

from __future__ import annotations

from mssante.trust.keeper import (
    RefreshOutcome,
    RefreshStatus,
    WhitelistFetchError,
    WhitelistKeeper,
    fetch_https,
    whitelist_verifier,
)
from mssante.trust.model import TrustDecision, TrustRefusal, Whitelist, WhitelistDomain
from mssante.trust.signature import (
    SignatureError,
    SignerCheck,
    SignerVerifier,
    sign_detached,
    verify_detached,
)
from mssante.trust.xmlformat import WhitelistFormatError, parse, parse_file, write

__all__ = [
    "RefreshOutcome",
    "RefreshStatus",
    "SignatureError",
    "SignerCheck",
    "SignerVerifier",
    "TrustDecision",
    "TrustRefusal",
    "Whitelist",
    "WhitelistDomain",
    "WhitelistFetchError",
    "WhitelistFormatError",
    "WhitelistKeeper",
    "fetch_https",
    "parse",
    "parse_file",
    "sign_detached",
    "verify_detached",
    "whitelist_verifier",
    "write",
]
