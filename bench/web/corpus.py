"""The distinct messages the benchmark's mailboxes hold (each stored once in the blob store, then
delivered many times with a Message-ID of its own).

Deterministic for a seed. Of ``count`` messages: two in three plain text (1–12 KB of French
words, lines under 78 characters), one in three ``multipart/alternative`` with an HTML part
(paragraphs, a table, links, a remote image that the read view must block), and one in ten
also carries a PDF-like attachment of 40–120 KB (base64). Each From is a professional of
another operator; Subject and Date vary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

WORDS = [
    "patient",
    "bilan",
    "consultation",
    "examen",
    "résultat",
    "compte",
    "rendu",
    "hospitalisation",
    "sortie",
    "traitement",
    "ordonnance",
    "posologie",
    "biologie",
    "radiologie",
    "échographie",
    "scanner",
    "IRM",
    "cardiologie",
    "suivi",
    "antécédents",
    "allergie",
    "tension",
    "glycémie",
    "créatinine",
    "hémoglobine",
    "avis",
    "confrère",
    "cordialement",
    "merci",
    "rendez-vous",
    "semaine",
    "prochaine",
    "urgence",
    "service",
    "médecin",
    "infirmier",
    "pharmacie",
    "prescription",
    "renouvellement",
    "protocole",
    "évolution",
    "favorable",
    "douleur",
    "fièvre",
    "toux",
    "contrôle",
]
FAMILY = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier"]  # fmt: skip
GIVEN = ["Jean", "Marie", "Pierre", "Anne", "Luc", "Claire", "Paul", "Sophie", "Louis", "Camille"]
SUBJECTS = (
    "Compte rendu de consultation",
    "Résultats de biologie",
    "Courrier de sortie",
    "Demande d'avis",
    "Ordonnance à renouveler",
    "Compte rendu opératoire",
    "Échographie abdominale",
    "Suivi post-opératoire",
)


@dataclass(frozen=True)
class Sample:
    raw: bytes
    subject: str
    sender: str  # the From address, lower case
    html: bool
    attachment: bool


def _paragraphs(rng: random.Random, size: int) -> list[str]:
    out, total = [], 0
    while total < size:
        words = [rng.choice(WORDS) for _ in range(rng.randint(25, 90))]
        text = " ".join(words).capitalize() + "."
        out.append(text)
        total += len(text)
    return out


def _wrapped(paragraph: str, width: int = 76) -> str:
    lines, line = [], ""
    for word in paragraph.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def _html(paragraphs: list[str], rng: random.Random) -> str:
    rows = "".join(
        f"<tr><td>{rng.choice(WORDS)}</td><td style='color:#333'>{rng.randint(1, 300)}</td></tr>"
        for _ in range(rng.randint(3, 12))
    )
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        "<html><head><style>p{margin:0}</style></head><body>"
        f"<div style='font-family:Arial'><h2>{rng.choice(SUBJECTS)}</h2>{body}"
        f"<table border='1'>{rows}</table>"
        "<p><a href='https://www.has-sante.fr/'>Recommandations</a> · "
        "<img src='https://tracker.example/pixel.gif' width='1' height='1'></p>"
        "</div></body></html>"
    )


def corpus(count: int, seed: int, recipient: str) -> list[Sample]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
    samples = []
    for i in range(count):
        family, given = rng.choice(FAMILY), rng.choice(GIVEN)
        sender = f"{given.lower()}.{family.lower().replace('è', 'e')}@a.mssante.test"
        subject = f"{rng.choice(SUBJECTS)} — {rng.choice(FAMILY).upper()} {rng.choice(GIVEN)}"
        paragraphs = _paragraphs(rng, rng.randint(1_000, 12_000))
        html = i % 3 == 1
        attachment = i % 10 == 7
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"Dr {given} {family} <{sender}>"
        msg["To"] = recipient
        msg["Subject"] = subject
        msg["Date"] = format_datetime(start + timedelta(minutes=37 * i))
        msg["Message-ID"] = f"<sample-{seed}-{i}@a.mssante.test>"
        msg["X-MSS-NIL"] = "bench"
        msg.set_content("\n\n".join(_wrapped(p) for p in paragraphs) + "\n")
        if html:
            msg.add_alternative(_html(paragraphs, rng), subtype="html")
        if attachment:
            pdf = b"%PDF-1.4\n" + rng.randbytes(rng.randint(40_000, 120_000))
            msg.add_attachment(
                pdf, maintype="application", subtype="pdf", filename=f"compte-rendu-{i}.pdf"
            )
        samples.append(Sample(msg.as_bytes(), subject, sender, html, attachment))
    return samples
