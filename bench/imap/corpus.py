"""The messages both servers hold: deterministic, mixed sizes, as SMTP delivery stores them.

``corpus(count, seed, recipient)`` yields the same ``count`` messages (bytes, CRLF line ends)
for a given seed: nine in ten are plain text of 2-20 KB (UTF-8, French words), one in ten is
multipart/mixed with a base64 attachment of 100-300 KB (encoded). Each message begins with
the two trace headers mssante's inbound SMTP prepends (``Received``, ``X-MSSante-Trace``, built
by ``mssante.mail.trace``, as if operator A had relayed it over mutual TLS), so that what is
loaded is byte for byte what an SMTP delivery would have stored; Dovecot gets the same bytes
(with LF line ends in its Maildir, as its LDA writes them; on the wire it sends CRLF, so both
servers send the same number of bytes).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime

from mssante.demo import OPERATORS
from mssante.mail.trace import TraceFacts, mssante_trace_header, received_header
from mssante.pki.names import departement_label

SEED = 20261125
ATTACHMENT_SHARE = 10  # one message in ten carries an attachment
TEXT_SIZES = (2 * 1024, 20 * 1024)
ATTACHMENT_SIZES = (100 * 1024, 300 * 1024)  # base64 text of the attachment
_VOCABULARY = (
    "patient patiente compte rendu consultation cardiologie échographie bilan sanguin "
    "ordonnance traitement posologie surveillance tension artérielle fréquence cardiaque "
    "antécédents allergie pénicilline hospitalisation service urgences radiologie scanner "
    "IRM thoracique abdominal biologie créatinine hémoglobine glycémie cholestérol suivi "
    "rendez-vous confrère cordialement docteur médecin traitant courrier résultats examen "
    "clinique normal anomalie contrôle semaines mois traitement anticoagulant kinésithérapie "
    "infirmier pansement sortie retour domicile prescription renouvellement avis spécialisé"
)
WORDS = _VOCABULARY.split()
SENDERS = (
    ("Hélène Martin", "helene.martin@hopital-nord.mssante.test"),
    ("Secrétariat de cardiologie", "secretariat.cardiologie@hopital-nord.mssante.test"),
    ("Laboratoire Nord", "labo@hopital-nord.mssante.test"),
)
_A = OPERATORS[0]  # the demo's hopital-nord: the peer that relayed the messages
PEER_DN = (
    f"CN={_A.mta_host},OU={_A.structure_id},O={_A.organisation},"
    f"ST={departement_label(_A.departement)},C=FR"
)
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class CorpusStats:
    count: int
    attachments: int
    bytes: int  # CRLF bytes, as stored by mssante and sent on the wire


def corpus(count: int, recipient: str, *, seed: int = SEED, tag: str = "c") -> Iterator[bytes]:
    """``count`` messages for ``recipient``; the same ones for the same seed and tag."""
    rng = random.Random(f"{seed}/{tag}")
    with_attachment = set(rng.sample(range(count), count // ATTACHMENT_SHARE))
    for n in range(count):
        yield message(rng, n, recipient, tag, attachment=n in with_attachment)


def stats_of(messages: list[bytes] | Iterator[bytes]) -> CorpusStats:
    count = attachments = size = 0
    for raw in messages:
        count += 1
        size += len(raw)
        attachments += b"multipart/mixed" in raw[:4096]
    return CorpusStats(count, attachments, size)


def message(
    rng: random.Random,
    n: int,
    recipient: str,
    tag: str,
    *,
    attachment: bool = False,
    text_size: int | None = None,
    trace: bool = True,
) -> bytes:
    name, sender = SENDERS[n % len(SENDERS)]
    when = START + timedelta(minutes=7 * n)
    subject = f"Compte rendu n°{n} — {rng.choice(WORDS)} {rng.choice(WORDS)}"
    head = (
        f"From: {Header(name, 'utf-8').encode()} <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: {Header(subject, 'utf-8').encode()}\r\n"
        f"Date: {format_datetime(when)}\r\n"
        f"Message-ID: <{n}.{tag}@bench.invalid>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    text = _text(rng, (text_size or rng.randint(*TEXT_SIZES)) - len(head) - 400)
    if attachment:
        boundary = f"=_bench_{n}_{rng.getrandbits(48):012x}"
        body = (
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"{_text(rng, rng.randint(500, 2000))}\r\n"
            f"--{boundary}\r\n"
            f'Content-Type: application/pdf; name="compte-rendu-{n}.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="compte-rendu-{n}.pdf"\r\n\r\n'
            f"{_base64(rng, rng.randint(*ATTACHMENT_SIZES))}"
            f"--{boundary}--\r\n"
        )
    else:
        body = (
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            f"{text}"
        )
    content = (head + body).encode("utf-8")
    return trace_headers(rng, recipient, when) + content if trace else content


def trace_headers(rng: random.Random, recipient: str, when: datetime) -> bytes:
    """What mssante's inbound SMTP prepends to a message relayed by operator A."""
    facts = TraceFacts(
        helo=_A.mta_host,
        peer_ip="127.0.0.1",
        hostname=OPERATORS[1].mta_host,
        tls_version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        peer_dn=PEER_DN,
        recipient=recipient,
    )
    queue_id = f"{rng.getrandbits(64):016X}"
    return received_header(facts, queue_id, when + timedelta(seconds=2)) + mssante_trace_header(
        facts
    )


def _text(rng: random.Random, size: int) -> str:
    """Paragraphs of words, lines under 78 characters, about ``size`` bytes."""
    lines: list[str] = []
    total = 0
    line: list[str] = []
    width = 0
    while total < max(size, 200):
        word = rng.choice(WORDS)
        if width + len(word) + 1 > 72:
            text = " ".join(line) + ("." if rng.random() < 0.3 else "")
            lines.append(text)
            total += len(text.encode()) + 2
            if rng.random() < 0.15:
                lines.append("")
                total += 2
            line, width = [], 0
        line.append(word)
        width += len(word) + 1
    lines.append(" ".join(line) + ".")
    return "\r\n".join(lines) + "\r\n"


def _base64(rng: random.Random, encoded_size: int) -> str:
    data = base64.b64encode(rng.randbytes(encoded_size * 3 // 4)).decode("ascii")
    return "".join(data[i : i + 76] + "\r\n" for i in range(0, len(data), 76))


def small_message(n: int, recipient: str, tag: str) -> bytes:
    """A short message (about 2 KB, no trace headers: the delivery adds its own) for the
    latency runs, with a unique Message-ID."""
    rng = random.Random(f"{SEED}/{tag}/{n}")
    return message(rng, n, recipient, tag, text_size=2048, trace=False)
