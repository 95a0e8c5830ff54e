"""Listings: the messages of a listed folder are one object per message for the whole process,
shared by the sessions, and never show a session anything its own listing did not read."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from pymap.flags import PermanentFlags, SessionFlags
from pymap.parsing import Params
from pymap.parsing.specials import ObjectId, SequenceSet
from pymap.parsing.specials.flag import Flag
from pymap.selected import SelectedMailbox

from mssante.imap import backend
from mssante.imap.backend import Listings
from mssante.ops.folders import Entry

WHEN = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)


def _entry(uid: int, *flags: str, size: int = 1200) -> Entry:
    return Entry(uid, frozenset(flags), WHEN, size)


def test_equal_entries_share_one_message_and_one_flag_set() -> None:
    listings = Listings()
    first = [listings.message(7, _entry(uid, "\\Seen")) for uid in range(1, 101)]
    second = [listings.message(7, _entry(uid, "\\Seen")) for uid in range(1, 101)]
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert len({id(m.permanent_flags) for m in first}) == 1
    assert first[0].permanent_flags == frozenset({Flag(b"\\Seen")})


def test_a_change_makes_a_new_message_and_the_old_stays_as_it_was() -> None:
    listings = Listings()
    before = listings.message(7, _entry(1, "\\Seen"))
    flagged = listings.message(7, _entry(1, "\\Seen", "\\Flagged"))
    resized = listings.message(7, _entry(1, "\\Seen", "\\Flagged", size=99))
    other_folder = listings.message(8, _entry(1, "\\Seen"))
    assert flagged is not before and resized is not flagged and other_folder is not before
    assert before.permanent_flags == frozenset(
        {Flag(b"\\Seen")}
    )  # a session holding it sees no change
    assert Flag(b"\\Flagged") in flagged.permanent_flags and resized.size == 99


def test_messages_no_session_holds_are_forgotten() -> None:
    listings = Listings()
    kept = listings.message(7, _entry(1))
    listings.message(7, _entry(2))
    gc.collect()
    assert listings.message(7, _entry(1)) is kept
    assert len(listings._messages) == 1  # uid 2 went with its last holder


def test_flag_sets_are_bounded() -> None:
    listings = Listings()
    for n in range(Listings.MAX_FLAG_SETS + 50):
        listings.flags(frozenset({f"$Mot{n}"}))
    assert len(listings._flag_sets) == Listings.MAX_FLAG_SETS


@settings(max_examples=200, deadline=None)
@given(
    uids=st.sets(st.integers(1, 400), min_size=80, max_size=200),
    gone=st.sets(st.integers(1, 400), max_size=40),
    asked=st.lists(st.tuples(st.integers(1, 450), st.integers(0, 2)), min_size=1, max_size=3),
)
def test_few_uids_are_found_as_pymap_finds_them(
    uids: set[int], gone: set[int], asked: list[tuple[int, int]]
) -> None:
    """backend._get_all (no walk of the folder for a few UIDs) answers as pymap's get_all,
    after messages were added and expunged."""
    selected = SelectedMailbox(
        ObjectId.random_mailbox_id(), False, PermanentFlags([]), SessionFlags([])
    )
    listings = Listings()
    selected.set_messages([listings.message(1, _entry(uid)) for uid in sorted(uids)])
    selected.set_messages([listings.message(1, _entry(uid)) for uid in sorted(uids - gone)])
    text = ",".join(f"{first}:{first + span}" if span else str(first) for first, span in asked)
    sequence_set = _uid_set(text)
    expected = [(seq, msg.uid) for seq, msg in selected.messages.get_all(sequence_set)]
    assert [(seq, msg.uid) for seq, msg in backend._get_all(selected, sequence_set)] == expected


def _uid_set(text: str) -> SequenceSet:
    parsed, _ = SequenceSet.parse(text.encode() + b" ", Params(uid=True))
    return parsed
