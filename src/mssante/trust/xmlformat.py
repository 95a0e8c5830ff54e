"""The whitelist's XML format: the authority's real format, read safely and written exactly.

The format (BRIEF §3, namespace ``https://listeblanche.mssante.fr/schema``)::

    <?xml version="1.0" encoding="UTF-8"?><ListeBlancheMSSante xmlns="…">
        <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>
        <ListeDomaines>
            <Domaine>
                <Nom>…</Nom>
                <Description>…</Description>
                <DNCertificatOperateur>…</DNCertificatOperateur>   (one or more)
                <ResponsableContact>…</ResponsableContact>
                <SupportContact>…</SupportContact>
                <DateMAJ>…</DateMAJ>
            </Domaine>
        </ListeDomaines>
    </ListeBlancheMSSante>

Reading is defensive: the size is bounded before anything is parsed; the document must be UTF-8
and must not contain a DOCTYPE at all (so no entity is ever expanded: no XXE, no "billion
laughs"); lxml runs with entity resolution, DTD loading and network access off. Every refusal is
a :class:`WhitelistFormatError` whose message is one line naming the reason and, when there is
one, the line.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from mssante.errors import MssanteError
from mssante.trust.model import Whitelist, WhitelistDomain, dn_key

NAMESPACE = "https://listeblanche.mssante.fr/schema"
ROOT = "ListeBlancheMSSante"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
_INDENT = "    "
_DOMAIN_FIELDS = (
    "Nom",
    "Description",
    "DNCertificatOperateur",
    "ResponsableContact",
    "SupportContact",
    "DateMAJ",
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")
_DECLARED_ENCODING_RE = re.compile(
    rb"""\A(?:\xef\xbb\xbf)?<\?xml[^>]*?encoding\s*=\s*["']([^"']*)["']"""
)
_DOCTYPE = b"<!DOCTYPE"
_POSITION_SUFFIX_RE = re.compile(r", line \d+, column \d+$")
# Characters XML 1.0 allows (§2.2), minus those the writer must escape as references.
_XML_CHAR_RE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class WhitelistFormatError(MssanteError):
    """A whitelist document was refused: not well-formed, not the format, or too large."""


# -- reading ---------------------------------------------------------------------------------------


def parse(data: bytes, *, max_bytes: int) -> Whitelist:
    """Read a whitelist document. Raises :class:`WhitelistFormatError` with one clear line."""
    _check_prolog(data, max_bytes)
    root = _parse_xml(data)
    return _read_root(root)


def parse_file(path: Path, *, max_bytes: int) -> Whitelist:
    """Read the whitelist in ``path``, never reading more than ``max_bytes`` + 1 bytes."""
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise WhitelistFormatError(
            f"cannot read whitelist {path.name}: {exc.strerror or exc}"
        ) from None
    return parse(data, max_bytes=max_bytes)


def _check_prolog(data: bytes, max_bytes: int) -> None:
    """Refusals decided on the bytes, before any parsing: size, encoding, DOCTYPE."""
    if len(data) > max_bytes:
        raise WhitelistFormatError(
            f"whitelist is too large: more than {max_bytes} bytes (the configured limit)"
        )
    if not data.strip():
        raise WhitelistFormatError("whitelist is empty")
    declared = _DECLARED_ENCODING_RE.match(data)
    if declared and declared.group(1).decode("ascii", "replace").upper() not in ("UTF-8", "UTF8"):
        encoding = declared.group(1).decode("ascii", "replace")
        raise WhitelistFormatError(f"whitelist must be encoded in UTF-8, it declares {encoding!r}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise WhitelistFormatError(f"whitelist is not valid UTF-8 (line {line})") from None
    doctype = data.find(_DOCTYPE)
    if doctype >= 0:  # DTDs, hence entities, are refused outright: no XXE, no entity bomb
        line = data.count(b"\n", 0, doctype) + 1
        raise WhitelistFormatError(
            f"whitelist refused: it contains a DOCTYPE, which is not allowed (line {line})"
        )


def _safe_parser() -> etree.XMLParser:
    # A new parser per document: lxml parsers keep state and are not shared between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def _parse_xml(data: bytes) -> etree._Element:
    parser = _safe_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise WhitelistFormatError(_syntax_message(data, exc)) from None
    docinfo = root.getroottree().docinfo
    doctype = str(getattr(docinfo, "doctype", "") or "")
    if doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise WhitelistFormatError("whitelist refused: it contains a DOCTYPE, which is not allowed")
    return root


def _syntax_message(data: bytes, exc: etree.XMLSyntaxError) -> str:
    line, column = exc.position
    if _at_end(data, line, column):
        return _truncation_message(data, _line_count(data))
    reason = _POSITION_SUFFIX_RE.sub("", str(exc.msg))
    return f"whitelist is not well-formed XML: {reason.strip()} (line {line})"


def _at_end(data: bytes, line: int, column: int) -> bool:
    """Whether libxml2 stopped where the data runs out (nothing but spaces after): the mark of
    a truncated document rather than a malformed one. Its columns count characters."""
    text = data.decode("utf-8")  # checked before parsing
    lines = text.split("\n")
    if line > len(lines):
        return True
    offset = sum(len(previous) + 1 for previous in lines[: max(line - 1, 0)]) + column - 1
    return not text[offset + 1 :].strip()


def _line_count(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _truncation_message(data: bytes, last_line: int) -> str:
    """Says which element was left open when the data ran out (the real sample lacks its root's
    closing tag: BRIEF §3)."""
    open_elements = _open_elements(data)
    if not open_elements:
        return f"whitelist is truncated: it ends at line {last_line}, before the root element"
    name, opened = open_elements[-1]
    if len(open_elements) == 1:
        return (
            f"whitelist is truncated: the root element <{name}> is not closed "
            f"(the data ends at line {last_line})"
        )
    return (
        f"whitelist is truncated: the data ends at line {last_line} inside <{name}> "
        f"(opened at line {opened}); the root element is not closed"
    )


def _open_elements(data: bytes) -> list[tuple[str, int]]:
    """The elements started and not ended when ``data`` stops, outermost first."""
    pull = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
    )
    stack: list[tuple[str, int]] = []
    with contextlib.suppress(etree.XMLSyntaxError):
        pull.feed(data)  # on an error, the events read so far still tell what is open
    for event, element in pull.read_events():
        if event == "start" and isinstance(element, etree._Element):
            stack.append((etree.QName(element).localname, _line(element)))
        elif event == "end" and stack:
            stack.pop()
    return stack


def _line(element: etree._Element) -> int:
    line = getattr(element, "sourceline", None)  # lxml-stubs leave it untyped
    return line if isinstance(line, int) else 0


def _read_root(root: etree._Element) -> Whitelist:
    _check_name(root, ROOT, "the root element")
    where = f"the root element (line {root.sourceline})"
    children = _children(root, where, ("DateDeGeneration", "ListeDomaines"))
    generated = _date(_single(children, "DateDeGeneration", where), "the list")
    liste = _single(children, "ListeDomaines", where)
    entries = _children(liste, "<ListeDomaines>", ("Domaine",)).get("Domaine", [])
    valid_dns: set[str] = set()  # each distinct DN is checked once
    domains = tuple(_read_domain(element, valid_dns) for element in entries)
    return Whitelist(generated_at=generated, domains=domains)


def _read_domain(element: etree._Element, valid_dns: set[str]) -> WhitelistDomain:
    where = f"the domain at line {element.sourceline}"
    children = _children(element, where, _DOMAIN_FIELDS)
    name = _text(_single(children, "Nom", where)).strip()
    if not name or any(c.isspace() for c in name):
        raise WhitelistFormatError(f"{where} has an invalid <Nom>: {name!r}")
    where = f"domain {name!r} (line {element.sourceline})"
    return WhitelistDomain(
        name=name,
        description=_text(_single(children, "Description", where)),
        operator_dns=_dns(children.get("DNCertificatOperateur", []), where, valid_dns),
        responsable_contact=_text(_single(children, "ResponsableContact", where)),
        support_contact=_text(_single(children, "SupportContact", where)),
        updated_at=_date(_single(children, "DateMAJ", where), where),
    )


def _dns(elements: list[etree._Element], where: str, valid_dns: set[str]) -> tuple[str, ...]:
    if not elements:
        raise WhitelistFormatError(f"{where} has no <DNCertificatOperateur>")
    dns = []
    for element in elements:
        dn = _text(element).strip()
        if dn not in valid_dns:
            try:
                dn_key(dn)
            except ValueError as exc:
                raise WhitelistFormatError(
                    f"{where}: <DNCertificatOperateur> at line {element.sourceline} "
                    f"is not a valid DN: {exc}: {dn!r}"
                ) from None
            valid_dns.add(dn)
        dns.append(dn)
    return tuple(dns)


def _check_name(element: etree._Element, expected: str, what: str) -> None:
    qname = etree.QName(element)
    if qname.localname != expected:
        raise WhitelistFormatError(
            f"{what} is <{qname.localname}>, expected <{expected}> (line {element.sourceline})"
        )
    if qname.namespace != NAMESPACE:
        found = f"namespace {qname.namespace!r}" if qname.namespace else "no namespace"
        raise WhitelistFormatError(
            f"<{expected}> at line {element.sourceline} is in {found}, "
            f"expected namespace {NAMESPACE!r}"
        )


def _children(
    parent: etree._Element, where: str, allowed: tuple[str, ...]
) -> dict[str, list[etree._Element]]:
    """``parent``'s child elements grouped by name; anything else in it is refused."""
    _no_text(parent.text, parent, where)
    groups: dict[str, list[etree._Element]] = {}
    for child in parent:
        name = etree.QName(child).localname
        if name not in allowed:
            raise WhitelistFormatError(
                f"unexpected element <{name}> at line {child.sourceline}, in {where}"
            )
        _check_name(child, name, f"the element in {where}")
        groups.setdefault(name, []).append(child)
        _no_text(child.tail, child, where)
    return groups


def _no_text(text: str | None, element: etree._Element, where: str) -> None:
    if text and text.strip():
        raise WhitelistFormatError(
            f"unexpected text {text.strip()[:40]!r} in {where} (near line {element.sourceline})"
        )


def _single(groups: dict[str, list[etree._Element]], name: str, where: str) -> etree._Element:
    found = groups.get(name, [])
    if not found:
        raise WhitelistFormatError(f"{where} has no <{name}>")
    if len(found) > 1:
        raise WhitelistFormatError(
            f"{where} has more than one <{name}> (line {found[1].sourceline})"
        )
    return found[0]


def _text(element: etree._Element) -> str:
    if len(element):
        raise WhitelistFormatError(
            f"<{etree.QName(element).localname}> at line {element.sourceline} "
            "must contain text only"
        )
    return element.text or ""


def _date(element: etree._Element, where: str) -> datetime:
    text = _text(element).strip()
    name = etree.QName(element).localname
    if _DATE_RE.fullmatch(text):
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except ValueError:
            pass
    raise WhitelistFormatError(
        f"{where}: <{name}> at line {element.sourceline} is not a date-time like "
        f"2025-03-13T14:54:10Z: {text[:40]!r}"
    )


# -- writing ---------------------------------------------------------------------------------------


def write(whitelist: Whitelist) -> bytes:
    """The document for ``whitelist``, in the real format, byte for byte (UTF-8, 4-space indent,
    the declaration directly followed by the root element)."""
    lines = [
        f'{XML_DECLARATION}<{ROOT} xmlns="{NAMESPACE}">',
        _leaf(1, "DateDeGeneration", format_date(whitelist.generated_at)),
        f"{_INDENT}<ListeDomaines>",
    ]
    for domain in whitelist.domains:
        lines += _domain_lines(domain)
    lines += [f"{_INDENT}</ListeDomaines>", f"</{ROOT}>", ""]
    return "\n".join(lines).encode("utf-8")


write_whitelist = write  # the name mssante.authority.publish uses
parse_whitelist = parse


def _domain_lines(domain: WhitelistDomain) -> list[str]:
    fields = [
        ("Nom", domain.name),
        ("Description", domain.description),
        *(("DNCertificatOperateur", dn) for dn in domain.operator_dns),
        ("ResponsableContact", domain.responsable_contact),
        ("SupportContact", domain.support_contact),
    ]
    lines = [f"{_INDENT * 2}<Domaine>"]
    for name, text in fields:
        _check_writable(text, domain.name, name)
        lines.append(_leaf(3, name, _escape(text)))
    lines.append(_leaf(3, "DateMAJ", format_date(domain.updated_at)))
    lines.append(f"{_INDENT * 2}</Domaine>")
    return lines


def _leaf(depth: int, name: str, escaped_text: str) -> str:
    return f"{_INDENT * depth}<{name}>{escaped_text}</{name}>"


def _check_writable(text: str, domain: str, field: str) -> None:
    bad = _XML_CHAR_RE.search(text)
    if bad:
        raise WhitelistFormatError(
            f"cannot write domain {domain!r}: <{field}> holds U+{ord(bad.group()):04X}, "
            "which XML does not allow"
        )


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "&#13;")  # a raw CR would come back as LF (XML 1.0 §2.11)
    )


def format_date(value: datetime) -> str:
    """``2025-03-13T14:54:10Z``: UTC, seconds, fractions only when there are some."""
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"
