"""Listings: the messages of a listed folder are one object per message for the whole process,
shared by the sessions, and never show a session anything its own listing did not read."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

from pymap.parsing.specials.flag import Flag

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
