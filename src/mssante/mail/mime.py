"""The one place a message's MIME structure is read, with its limits (docs/security.md).

A message is a tree of parts (RFC 2045, RFC 2046 §5): multiparts and embedded messages hold
parts. A tree hundreds of levels deep is a few kilobytes of text, yet every recursive parser
(pymap's, the standard library's, the renderers of BODYSTRUCTURE) then exhausts Python's stack,
and one such message in a mailbox broke every sync of it. So:

- at acceptance, every door refuses a message deeper than ``mime.max_depth`` or with more than
  ``mime.max_parts`` parts (:func:`exceeds`: 554 5.6.0, as Postfix's ``mime_nesting_limit``);
- wherever a stored message is read (IMAP, webmail, search, reports), a part past the limits is
  read as one opaque ``application/octet-stream`` leaf: :func:`structure` gives IMAP its pymap
  tree cut there, :func:`email_message` gives the standard library's parser a copy whose cut
  parts' ``Content-Type`` says so. Nothing past the limits is ever parsed, so no parser recurses
  deeper than ``max_depth`` levels and none scans the message more than ``max_depth`` times.

Written here: pymap's parser (pinned, 0.36.7) has no limit, so its tree is built with its own
pieces (line index, header parser, part finder, constructors), stopping at the limits; the
recursion below is bounded by ``max_depth`` (at most 64).
"""

from __future__ import annotations

import email
import re
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.policy import Policy, compat32
from enum import StrEnum

from pymap.mime import MessageBody, MessageContent, MessageHeader

from mssante.config import MimeSettings

OPAQUE = "application/octet-stream"
_OPAQUE_FIELD = b"Content-Type: application/octet-stream\r\n"
_CONTAINER = re.compile(rb"(?im)^content-type[ \t]*:\s*[\"']?(?:multipart|message)/")
_Lines = Sequence[tuple[int, int, int]]  # pymap's line index: (start, end, next start)


class Exceeded(StrEnum):
    DEPTH = "depth"
    PARTS = "parts"


@dataclass(frozen=True)
class Structure:
    content: MessageContent  # pymap's tree, cut at the limits
    depth: int  # the deepest container nesting read (at most max_depth)
    parts: int  # the parts read (at most max_parts)
    exceeded: Exceeded | None  # why some part was cut, if one was
    cut_fields: tuple[tuple[int, int], ...]  # byte ranges of the cut parts' Content-Type fields


def surely_within(raw: bytes, limits: MimeSettings) -> bool:
    """A C-speed scan: True when the message cannot exceed the limits (fewer container types
    than levels allowed, fewer ``--`` lines than parts allowed). Most mail stops here."""
    containers = len(_CONTAINER.findall(raw))
    return containers < limits.max_depth and raw.count(b"\n--") + containers < limits.max_parts


def exceeds(raw: bytes, limits: MimeSettings) -> Exceeded | None:
    """Why the message breaks the limits, or ``None``: the acceptance check of every door."""
    if surely_within(raw, limits):
        return None
    return structure(raw, limits).exceeded


def structure(raw: bytes, limits: MimeSettings) -> Structure:
    """pymap's tree of ``raw``; a part past the limits is one opaque leaf."""
    reader = _Reader(raw, limits)
    content = reader.content(MessageContent._find_lines(raw), depth=0)
    return Structure(content, reader.depth, reader.parts, reader.exceeded, tuple(reader.cut))


def readable_copy(raw: bytes, limits: MimeSettings) -> bytes:
    """``raw`` itself when within the limits, else a copy where each cut part's
    ``Content-Type`` is ``application/octet-stream`` (its other lines untouched)."""
    if surely_within(raw, limits):
        return raw
    ranges = structure(raw, limits).cut_fields
    if not ranges:
        return raw
    pieces, at = [], 0
    for start, end in sorted(ranges):
        pieces += [raw[at:start], _OPAQUE_FIELD]
        at = end
    pieces.append(raw[at:])
    return b"".join(pieces)


def email_message(raw: bytes, limits: MimeSettings, policy: Policy = compat32) -> Message:
    """The standard library's parse of the message, cut at the limits (:func:`readable_copy`)."""
    return email.message_from_bytes(readable_copy(raw, limits), policy=policy)


@dataclass
class _Reader:
    data: bytes
    limits: MimeSettings
    depth: int = 0
    parts: int = 0
    exceeded: Exceeded | None = None
    cut: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.view = memoryview(self.data)

    def content(self, lines: _Lines, depth: int) -> MessageContent:
        """One part and, within the limits, its parts (recursion at most max_depth deep)."""
        self.parts += 1
        self.depth = max(self.depth, depth)
        header_lines, body_lines = MessageContent._split_lines(self.data, lines)
        header = MessageHeader._parse(self.data, self.view, header_lines)
        content_type = header.parsed.content_type or MessageBody._parse_content_type("text/plain")
        children = self._children(content_type, body_lines)
        nested: list[MessageContent] = []
        if children:
            why = self._over(depth, len(children))
            if why is None:
                nested = [self.content(child, depth + 1) for child in children]
            else:
                self.exceeded = self.exceeded or why
                self.cut += _content_type_fields(header, header_lines)
                content_type = MessageBody._parse_content_type(OPAQUE)
        body = MessageBody(self.data, body_lines, content_type, nested)
        return MessageContent(self.data, header, body)

    def _children(self, content_type: object, body_lines: _Lines) -> Sequence[_Lines]:
        """The line groups of the parts this part holds (pymap's own rules)."""
        maintype = getattr(content_type, "maintype", "")
        if maintype == "multipart":
            boundary = MessageBody._get_boundary(content_type)  # type: ignore[arg-type]
            if boundary:
                return _find_parts(self.data, body_lines, boundary)
        elif maintype == "message" and getattr(content_type, "subtype", "") == "rfc822":
            return [body_lines]
        return []

    def _over(self, depth: int, children: int) -> Exceeded | None:
        if depth >= self.limits.max_depth:
            return Exceeded.DEPTH
        if self.parts + children > self.limits.max_parts:
            return Exceeded.PARTS
        return None


def _find_parts(data: bytes, lines: _Lines, boundary: bytes) -> list[_Lines]:
    """The line groups between ``--boundary`` lines up to ``--boundary--`` (RFC 2046 §5.1.1),
    as pymap's ``MessageBody._find_parts`` finds them (a line equal to the delimiter), but by
    searching for the delimiter instead of comparing every line: the cost is the delimiters',
    not the lines' (a part at depth 32 would otherwise scan its lines 32 times)."""
    if not lines:
        return []
    starts = [line[0] for line in lines]
    delimiter = b"--" + boundary
    at, end = lines[0][0], lines[-1][2]
    marks: list[int] = []  # indices of delimiter lines; the last one may be the closing one
    while (found := data.find(delimiter, at, end)) >= 0:
        at = found + len(delimiter)
        index = bisect_left(starts, found)
        if index == len(starts) or starts[index] != found:
            continue  # not at the start of a line
        start, stop, _ = lines[index]
        line = data[start:stop]
        if line == delimiter + b"--":
            marks.append(-index - 1)  # closing
            break
        if line == delimiter:
            marks.append(index)
    groups: list[_Lines] = []
    for position, mark in enumerate(marks):
        if mark < 0:
            break
        following = marks[position + 1] if position + 1 < len(marks) else None
        stop_index = (
            len(lines) if following is None else (following if following >= 0 else -following - 1)
        )
        groups.append(lines[mark + 1 : stop_index])
    return groups


def _content_type_fields(header: MessageHeader, header_lines: _Lines) -> list[tuple[int, int]]:
    """The byte ranges of the header's Content-Type fields, folded lines included."""
    ranges: list[tuple[int, int]] = []
    for name, lines in header._folded:
        if MessageHeader._to_bytes(name) == b"content-type" and lines:
            ranges.append((lines[0][0], lines[-1][2]))
    return ranges
