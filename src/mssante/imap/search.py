"""IMAP SEARCH keys (as pymap parses them) → the protocol-free criteria of ops/folders.

RFC 9051 §6.4.4 / RFC 3501 §6.4.4. Message sequence numbers and \\Recent belong to the IMAP
session, so they are resolved here into UID sets; everything else is handed to
:meth:`mssante.ops.folders.Folders.search` unchanged in meaning.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import Final, Literal

from pymap.exceptions import SearchNotAllowed
from pymap.parsing.specials import SearchKey
from pymap.selected import SelectedMailbox

from mssante.ops.folders import (
    SEEN,
    All,
    And,
    Criterion,
    DateIs,
    HasFlag,
    HeaderHas,
    InUids,
    Not,
    Or,
    SizeIs,
    TextHas,
)

# Keys that test one system flag: (flag, present).
_FLAG_KEYS: Final = MappingProxyType(
    {
        b"ANSWERED": ("\\Answered", True),
        b"UNANSWERED": ("\\Answered", False),
        b"DELETED": ("\\Deleted", True),
        b"UNDELETED": ("\\Deleted", False),
        b"DRAFT": ("\\Draft", True),
        b"UNDRAFT": ("\\Draft", False),
        b"FLAGGED": ("\\Flagged", True),
        b"UNFLAGGED": ("\\Flagged", False),
        b"SEEN": (SEEN, True),
        b"UNSEEN": (SEEN, False),
    }
)
_DATE_KEYS: Final = MappingProxyType(
    {
        b"BEFORE": ("before", False),
        b"ON": ("on", False),
        b"SINCE": ("since", False),
        b"SENTBEFORE": ("before", True),
        b"SENTON": ("on", True),
        b"SENTSINCE": ("since", True),
    }
)
_ENVELOPE_KEYS: Final = MappingProxyType(
    {b"FROM": "From", b"TO": "To", b"CC": "Cc", b"BCC": "Bcc", b"SUBJECT": "Subject"}
)


def criterion_of(keys: Iterable[SearchKey], selected: SelectedMailbox) -> Criterion:
    """All the keys must match (the implicit AND of a SEARCH command)."""
    return And(tuple(_one(key, selected) for key in keys))


def _one(key: SearchKey, selected: SelectedMailbox) -> Criterion:
    if key.inverse:
        return Not(_one(key.not_inverse, selected))
    name = key.value
    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return HasFlag(flag, present)
    if name in _DATE_KEYS:
        op, sent = _DATE_KEYS[name]
        return DateIs(_date_op(op), key.filter_datetime.date(), sent=sent)
    if name in _ENVELOPE_KEYS:
        return HeaderHas(_ENVELOPE_KEYS[name], key.filter_str)
    return _other(key, selected)


def _other(key: SearchKey, selected: SelectedMailbox) -> Criterion:
    name = key.value
    if name == b"ALL":
        return All()
    if name == b"KEYSET":
        return And(tuple(_one(k, selected) for k in key.filter_key_set))
    if name == b"OR":
        left, right = key.filter_key_or
        return Or(_one(left, selected), _one(right, selected))
    return _content_key(key, selected)


def _content_key(key: SearchKey, selected: SelectedMailbox) -> Criterion:
    name = key.value
    if name in (b"KEYWORD", b"UNKEYWORD"):
        return HasFlag(key.filter_flag.value.decode("ascii"), name == b"KEYWORD")
    if name in (b"LARGER", b"SMALLER"):
        return SizeIs("larger" if name == b"LARGER" else "smaller", key.filter_int)
    if name == b"HEADER":
        field, text = key.filter_header
        return HeaderHas(field, text)
    if name in (b"BODY", b"TEXT"):
        return TextHas(key.filter_str, body_only=name == b"BODY")
    return _session_key(key, selected)


def _session_key(key: SearchKey, selected: SelectedMailbox) -> Criterion:
    """Keys only the session can answer: sequence sets and \\Recent (never stored)."""
    name = key.value
    if name == b"SEQSET":  # message numbers or UID ranges, as this session sees them
        uids = selected.messages.get_uids(key.filter_sequence_set)
        return InUids(frozenset(uid for _, uid in uids))
    recent = InUids(frozenset(selected.session_flags.recent_uids))
    if name == b"RECENT":
        return recent
    if name == b"OLD":
        return Not(recent)
    if name == b"NEW":
        return And((recent, HasFlag(SEEN, False)))
    raise SearchNotAllowed(key)  # EMAILID, THREADID: OBJECTID is not offered


def _date_op(op: str) -> Literal["before", "on", "since"]:
    if op == "before":
        return "before"
    return "on" if op == "on" else "since"
