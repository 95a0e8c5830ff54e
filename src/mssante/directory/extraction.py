"""The agency's directory extraction: ``Extraction_Correspondance_MSSante_<ts>.txt``.

Format (BRIEF §4): UTF-8, ``|``-separated, one header line, then one line per mailbox (BAL), 31
columns, in the order of :data:`HEADER_COLUMNS`. No quoting exists: a field cannot contain ``|``.

The reader streams: it reads bytes and splits lines itself with a length cap, so a file of any
size, or one line of gigabytes, costs at most ``max_line_bytes`` of memory per line; it never
holds the file. A bad line is reported with its number and reason and reading goes on; only a
wrong header stops it (:class:`HeaderError`). The one thing kept across lines is the set of
addresses seen, to report duplicates (about 100 bytes per line).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, NamedTuple

from mssante.errors import MssanteError

# BRIEF §4, the 31 columns of the extraction, in file order.
HEADER_COLUMNS: tuple[str, ...] = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION",
    "L3COMPLEMENTDISTRIBUTION",
    "L4NUMEROVOIE",
    "L4COMPLEMENTNUMEROVOIE",
    "NL4TYPEVOIE",
    "L4LIBELLEVOIE",
    "L5LIEUDITMENTION",
    "L6LIGNEACHEMINEMENT",
    "Code postal",
    "Département",
    "Pays",
)
HEADER = "|".join(HEADER_COLUMNS)
COLUMN_COUNT = len(HEADER_COLUMNS)
SEPARATOR = "|"
BAL_TYPES = frozenset({"PER", "ORG", "APP", "CAB"})  # BRIEF §4: mailbox types
DEFAULT_MAX_LINE_BYTES = 8192
FILE_PREFIX = "Extraction_Correspondance_MSSante_"
_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (mis-decoded Windows-1252)
# Bytes that are not C0 controls or DEL: deleting them from a line leaves only its controls (a
# fast test in C). C1 controls are U+0080–U+009F, which UTF-8 writes 0xC2 0x80–0x9F.
_NOT_C0 = bytes(b for b in range(256) if b >= 0x20 and b != 0x7F)
_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class ExtractionRow(NamedTuple):
    """One line of the extraction: the 31 fields, as text, in file order (BRIEF §4)."""

    type_bal: str
    adresse_bal: str
    type_identifiant_pp: str
    identifiant_pp: str
    identification_nationale_pp: str
    type_identifiant_structure: str
    identification_structure: str
    service_rattachement: str
    civilite_exercice: str
    nom_exercice: str
    prenom_exercice: str
    categorie_profession: str
    libelle_categorie_profession: str
    code_profession: str
    libelle_profession: str
    code_savoir_faire: str
    libelle_savoir_faire: str
    dematerialisation: str
    raison_sociale: str
    enseigne_commerciale: str
    l2_complement_localisation: str
    l3_complement_distribution: str
    l4_numero_voie: str
    l4_complement_numero_voie: str
    l4_type_voie: str
    l4_libelle_voie: str
    l5_lieu_dit_mention: str
    l6_ligne_acheminement: str
    code_postal: str
    departement: str
    pays: str

    @property
    def address_key(self) -> str:
        """The address as stored and compared: lower case (addresses are unique in any case)."""
        return self.adresse_bal.lower()

    def line(self) -> str:
        """The line as in the file, without its end-of-line."""
        return SEPARATOR.join(self)


def parse_line(text: str) -> ExtractionRow:
    """A line already known to be good (stored raw text) back into its fields."""
    return ExtractionRow._make(text.split(SEPARATOR))


class LineProblem(StrEnum):
    """Why a line was not imported. Each value has its French and English wording below."""

    TOO_LONG = "too_long"
    NOT_UTF8 = "not_utf8"
    CONTROL_CHARACTER = "control_character"
    EXTRA_SEPARATOR = "extra_separator"
    COLUMN_COUNT = "column_count"
    UNKNOWN_TYPE = "unknown_type"
    BAD_ADDRESS = "bad_address"
    DUPLICATE_ADDRESS = "duplicate_address"
    FIELD_TOO_LONG = "field_too_long"  # found at staging: longer than its column
    TYPE_CHANGED = "type_changed"  # found at the merge: a known address with another type


@dataclass(frozen=True)
class LineError:
    """A bad line: the problem, and its explanation in French then English."""

    problem: LineProblem
    french: str
    english: str

    @property
    def message(self) -> str:
        return f"{self.french} / {self.english}"


class HeaderError(MssanteError):
    """The file is not an extraction: its first line is not the expected header."""


# -- reading -----------------------------------------------------------------------------------


_CHUNK = 1 << 20
_TOO_LONG = None  # what the line splitter yields for a line over the cap


class ExtractionReader:
    """Iterate over ``(line_number, row or LineError)``; line 1 is the header (checked first).

    The file is read in chunks of 1 MiB and split into lines here; a line longer than
    ``max_line_bytes`` (its end-of-line included) is reported, and its bytes past the current
    chunk are skipped without being kept. ``bytes_read`` grows as reading goes (for a progress
    bar); ``sha256`` is the whole file's hash once iteration has ended; ``newline`` and ``bom``
    say how the header was written, so that an export writes the file the same way.
    ``last_raw`` and ``last_text`` are the bytes and text of the last good row yielded (so that
    an importer need not join its fields again).
    """

    def __init__(self, stream: BinaryIO, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._stream = stream
        self._max = max_line_bytes
        self._hash = hashlib.sha256()
        self._seen: set[int] = set()
        self.bytes_read = 0
        self.newline = "\n"
        self.bom = False
        self.last_raw = b""
        self.last_text = ""
        self._lines = self._split()
        self._read_header()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def __iter__(self) -> Iterator[tuple[int, ExtractionRow | LineError]]:
        parse = self._parse
        for number, raw in enumerate(self._lines, start=2):
            yield number, _too_long(self._max) if raw is _TOO_LONG else parse(raw)

    # -- the header ----------------------------------------------------------------------------
    def _read_header(self) -> None:
        raw = next(self._lines, b"")
        if raw is _TOO_LONG:
            raise HeaderError(
                "la première ligne n'est pas l'en-tête (trop longue) / "
                "the first line is not the header (too long)"
            )
        if not raw and self.bytes_read == 0:
            raise HeaderError("fichier vide : pas d'en-tête / empty file: no header line")
        if raw.startswith(_BOM):
            self.bom, raw = True, raw[len(_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise HeaderError(
                "l'en-tête n'est pas en UTF-8 / the header line is not UTF-8"
            ) from None
        check_header(text)

    # -- lines ---------------------------------------------------------------------------------
    def _split(self) -> Iterator[bytes | None]:
        """Lines without their end-of-line (LF or CRLF), or ``_TOO_LONG`` for one over the cap.
        At most one chunk and one capped line are in memory at any time."""
        pending, first = b"", True
        while chunk := self._read():
            lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
            pending = lines.pop()
            if first and lines:
                first = False
                self.newline = "\r\n" if lines[0].endswith(b"\r") else "\n"
            yield from self._capped(lines)
            while len(pending) >= self._max:  # a line over the cap, its end not read yet
                yield _TOO_LONG
                lines = self._skip_to_line_end().split(b"\n")
                pending = lines.pop()
                yield from self._capped(lines)
        if pending:
            yield from self._capped([pending])

    def _capped(self, lines: list[bytes]) -> Iterator[bytes | None]:
        limit = self._max
        for line in lines:
            if len(line) >= limit:
                yield _TOO_LONG
            else:
                yield line[:-1] if line.endswith(b"\r") else line

    def _skip_to_line_end(self) -> bytes:
        """Drop bytes up to the next end-of-line; return what follows it in that chunk."""
        while chunk := self._read():
            end = chunk.find(b"\n")
            if end >= 0:
                return chunk[end + 1 :]
        return b""

    def _read(self) -> bytes:
        chunk = self._stream.read(_CHUNK)
        self.bytes_read += len(chunk)
        self._hash.update(chunk)
        return chunk

    def _parse(self, raw: bytes) -> ExtractionRow | LineError:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _not_utf8(raw, exc.start)
        if (raw.translate(None, _NOT_C0) or b"\xc2" in raw) and _CONTROL.search(text):
            return _control(text)
        fields = text.split(SEPARATOR)
        if len(fields) != COLUMN_COUNT:
            return _column_count(len(fields))
        row: ExtractionRow = tuple.__new__(ExtractionRow, fields)
        self.last_raw, self.last_text = raw, text
        return self._check_row(row)

    def _check_row(self, row: ExtractionRow) -> ExtractionRow | LineError:
        if row[0] not in BAL_TYPES:
            return LineError(
                LineProblem.UNKNOWN_TYPE,
                f"type de BAL inconnu « {row.type_bal[:20]} » (PER, ORG, APP ou CAB)",
                f"unknown mailbox type '{row.type_bal[:20]}' (PER, ORG, APP or CAB)",
            )
        if not _ADDRESS.fullmatch(row[1]):
            return LineError(
                LineProblem.BAD_ADDRESS,
                f"adresse BAL absente ou invalide « {row.adresse_bal[:80]} »",
                f"missing or invalid mailbox address '{row.adresse_bal[:80]}'",
            )
        # Addresses seen are remembered by their 64-bit hash (a third of the memory of the
        # strings). Two different addresses with the same hash, odds about 1 in 10^7 for a file
        # of 1.5 million lines, would see the second reported as a duplicate: never the reverse.
        key = hash(row[1].lower())
        if key in self._seen:
            return LineError(
                LineProblem.DUPLICATE_ADDRESS,
                f"adresse {row.address_key[:80]} déjà présente plus haut dans le fichier",
                f"address {row.address_key[:80]} already appears earlier in the file",
            )
        self._seen.add(key)
        return row


def check_header(text: str) -> None:
    """Refuse a header that is not exactly :data:`HEADER`, naming the first differing column."""
    if text == HEADER:
        return
    found = text.split(SEPARATOR)
    for index, expected in enumerate(HEADER_COLUMNS):
        got = found[index] if index < len(found) else None
        if got != expected:
            raise HeaderError(_header_difference(index + 1, expected, got))
    raise HeaderError(
        f"en-tête inattendu : {len(found)} colonnes au lieu de {COLUMN_COUNT} / "
        f"unexpected header: {len(found)} columns instead of {COLUMN_COUNT}"
    )


def _header_difference(number: int, expected: str, got: str | None) -> str:
    if got is None:
        return (
            f"en-tête inattendu : colonne {number} « {expected} » absente / "
            f"unexpected header: column {number} '{expected}' is missing"
        )
    shown = got[:60]
    return (
        f"en-tête inattendu : colonne {number} « {shown} » au lieu de « {expected} » / "
        f"unexpected header: column {number} is '{shown}', expected '{expected}'"
    )


def _control(text: str) -> LineError:
    found = _CONTROL.search(text)
    assert found is not None
    code, position = ord(found.group()), found.start() + 1
    return LineError(
        LineProblem.CONTROL_CHARACTER,
        f"caractère de contrôle U+{code:04X} en position {position}",
        f"control character U+{code:04X} at position {position}",
    )


def _column_count(count: int) -> LineError:
    if count == COLUMN_COUNT + 1:
        return LineError(
            LineProblem.EXTRA_SEPARATOR,
            f"un « | » de trop ({count} colonnes au lieu de {COLUMN_COUNT})",
            f"one '|' too many ({count} columns instead of {COLUMN_COUNT})",
        )
    return LineError(
        LineProblem.COLUMN_COUNT,
        f"{count} colonnes au lieu de {COLUMN_COUNT}",
        f"{count} columns instead of {COLUMN_COUNT}",
    )


def _not_utf8(raw: bytes, position: int) -> LineError:
    byte = raw[position]
    return LineError(
        LineProblem.NOT_UTF8,
        f"pas en UTF-8 : octet 0x{byte:02X} à l'octet {position + 1} (fichier en Latin-1 ?)",
        f"not UTF-8: byte 0x{byte:02X} at byte {position + 1} (a Latin-1 file?)",
    )


def _too_long(limit: int) -> LineError:
    return LineError(
        LineProblem.TOO_LONG,
        f"ligne trop longue (plus de {limit} octets), ignorée",
        f"line too long (over {limit} bytes), skipped",
    )


# -- writing -----------------------------------------------------------------------------------


def format_row(row: ExtractionRow) -> str:
    """A row as a line (no end-of-line); refuses fields that would break the format."""
    for name, value in zip(ExtractionRow._fields, row, strict=True):
        if SEPARATOR in value or _CONTROL.search(value):
            raise ValueError(f"field {name} contains '|' or a control character")
    if row.type_bal not in BAL_TYPES:
        raise ValueError(f"unknown mailbox type {row.type_bal!r}")
    return row.line()


def extraction_file_name(at: datetime) -> str:
    """``Extraction_Correspondance_MSSante_<ts>.txt``; BRIEF §4 does not give the timestamp's
    form: we write ``YYYYMMDDhhmmss`` (UTC)."""
    return f"{FILE_PREFIX}{at.strftime('%Y%m%d%H%M%S')}.txt"


class ExtractionWriter:
    """Writes an extraction to a temporary file beside ``path``; :meth:`commit` fsyncs it and
    renames it into place, so a reader never sees half a file. Without commit, nothing stays."""

    def __init__(self, path: Path, *, newline: str = "\n", bom: bool = False) -> None:
        self.path = path
        self.newline = newline.encode()
        self.lines = 0
        fd, temp = tempfile.mkstemp(prefix=".extraction-", dir=path.parent)
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._file.write((_BOM if bom else b"") + HEADER.encode() + self.newline)

    def write_line(self, text: str) -> None:
        """One stored line (already checked when it was imported or published)."""
        self._file.write(text.encode() + self.newline)
        self.lines += 1

    def write_lines(self, texts: Iterable[str]) -> None:
        newline = self.newline
        chunk = [text.encode() + newline for text in texts]
        self._file.write(b"".join(chunk))
        self.lines += len(chunk)

    def commit(self) -> None:
        self._file.flush()
        os.fchmod(self._file.fileno(), 0o644)  # public data (liste rouge never written)
        os.fsync(self._file.fileno())
        self._file.close()
        self._temp.replace(self.path)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)
