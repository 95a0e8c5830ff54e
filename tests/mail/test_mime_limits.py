"""The MIME limits of mail/mime.py: a tree cut at the limits, never a deeper recursion, the same
parts as pymap's parser within them."""

from __future__ import annotations

import email

from hypothesis import given, settings
from hypothesis import strategies as st
from pymap.mime import MessageBody, MessageContent

from mssante.config import MimeSettings
from mssante.mail import mime
from mssante.mail.reading import parse_message

LIMITS = MimeSettings()


def nested(levels: int, leaf: bytes = b"Content-Type: text/plain\r\n\r\nbonjour\r\n") -> bytes:
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(levels)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(levels)))
    return b"From: a@b.test\r\nSubject: s\r\n" + opening + leaf + closing


def _depth(content: MessageContent) -> int:
    depth, level = 0, [content]
    while level:
        level = [part for c in level for part in c.body.nested]
        depth += bool(level)
    return depth


def test_within_the_limits_the_tree_is_pymaps() -> None:
    raw = nested(5)
    ours, theirs = mime.structure(raw, LIMITS).content, MessageContent.parse(raw)
    assert ours.json == theirs.json
    assert mime.exceeds(raw, LIMITS) is None
    assert mime.readable_copy(raw, LIMITS) is raw


def test_a_deep_tree_is_cut_into_one_opaque_part() -> None:
    for levels in (33, 140, 3000, 20_000):
        raw = nested(levels)
        found = mime.structure(raw, LIMITS)
        assert found.exceeded is mime.Exceeded.DEPTH
        assert _depth(found.content) == LIMITS.max_depth
        cut = found.content
        while cut.body.nested:
            cut = cut.body.nested[0]
        assert cut.body.content_type.content_type == mime.OPAQUE
        assert bytes(found.content) == raw  # the bytes are the message's, untouched
        assert mime.exceeds(raw, LIMITS) is mime.Exceeded.DEPTH


def test_the_standard_parser_reads_the_cut_copy() -> None:
    raw = nested(3000)
    msg = mime.email_message(raw, LIMITS)
    depth, part = 0, msg
    while part.is_multipart():
        part = part.get_payload()[0]
        depth += 1
    assert depth == LIMITS.max_depth and part.get_content_type() == mime.OPAQUE
    view = parse_message(raw)
    assert [a.content_type for a in view.attachments] == [mime.OPAQUE]


def test_too_many_parts_are_one_opaque_part() -> None:
    parts = b"".join(b"--p\r\nContent-Type: text/plain\r\n\r\n%d\r\n" % i for i in range(2000))
    raw = b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    found = mime.structure(raw, LIMITS)
    assert found.exceeded is mime.Exceeded.PARTS and found.parts == 1
    assert (
        email.message_from_bytes(mime.readable_copy(raw, LIMITS)).get_content_type() == mime.OPAQUE
    )


def test_a_folded_content_type_is_cut_whole() -> None:
    raw = nested(40).replace(
        b"Content-Type: multipart/mixed;", b"Content-Type: multipart/mixed;\r\n\t"
    )
    copy = mime.readable_copy(raw, LIMITS)
    assert mime.structure(copy, LIMITS).exceeded is None


_LINES = st.lists(
    st.sampled_from([b"--b", b"--b--", b"--bb", b"x--b", b"--b ", b"texte", b"", b"--b--x"]),
    max_size=14,
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_LINES, st.booleans(), st.integers(min_value=0, max_value=13))
def test_parts_are_found_as_pymap_finds_them(lines: list[bytes], crlf: bool, skip: int) -> None:
    data = (b"\r\n" if crlf else b"\n").join(lines)
    index = MessageContent._find_lines(data)[skip:]
    theirs = MessageBody._find_parts(data, memoryview(data), index, b"b")
    assert [list(group) for group in mime._find_parts(data, index, b"b")] == [
        list(group) for group in theirs
    ]
