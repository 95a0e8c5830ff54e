"""Type-ahead queries drawn from a synthetic extraction, as people type them.

Deterministic for a seed. The mix (of ``count`` queries):

- 35 % a family name's first 2–7 letters, as typed (accents and case kept: "LEFÈ", "dup");
- 15 % "prénom nom…", the family name cut short; 10 % "nom prénom…";
- 10 % one or two letters (the first keystrokes: "d", "ma");
- 10 % two words of a structure's name or its service ("chu lyon", "cardiologie centre");
- 10 % an address prefix ("jean.dup", "jean.dupont@med");
- 10 % a word that matches nothing ("zqxw…": the worst case of a scan).
"""

from __future__ import annotations

import random
from pathlib import Path

from mssante.directory.extraction import ExtractionReader, ExtractionRow


def sample_rows(path: Path, count: int, seed: int) -> list[ExtractionRow]:
    """``count`` rows spread over the whole file (reservoir sampling: one pass, bounded)."""
    rng = random.Random(seed)
    kept: list[ExtractionRow] = []
    with path.open("rb") as stream:
        for seen, (_, item) in enumerate(ExtractionReader(stream)):
            if not isinstance(item, ExtractionRow):
                continue
            if len(kept) < count:
                kept.append(item)
            elif (slot := rng.randrange(seen + 1)) < count:
                kept[slot] = item
    return kept


def make_queries(rows: list[ExtractionRow], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    people = [r for r in rows if r.nom_exercice]
    places = [r for r in rows if r.raison_sociale or r.service_rattachement]
    makers = (
        (35, lambda: _family(rng, rng.choice(people))),
        (15, lambda: _given_family(rng, rng.choice(people))),
        (10, lambda: _family_given(rng, rng.choice(people))),
        (10, lambda: _first_keys(rng, rng.choice(people))),
        (10, lambda: _structure(rng, rng.choice(places))),
        (10, lambda: _address(rng, rng.choice(rows))),
        (10, lambda: "zqxw" + "".join(rng.choice("jkvy") for _ in range(rng.randrange(0, 3)))),
    )
    weights = [w for w, _ in makers]
    return [rng.choices(makers, weights)[0][1]() for _ in range(count)]


def _cut(rng: random.Random, word: str, low: int = 2, high: int = 7) -> str:
    return word[: rng.randint(low, max(low, min(high, len(word))))]


def _typed(rng: random.Random, text: str) -> str:
    return text.lower() if rng.random() < 0.6 else text


def _family(rng: random.Random, row: ExtractionRow) -> str:
    return _typed(rng, _cut(rng, row.nom_exercice.split()[0]))


def _given_family(rng: random.Random, row: ExtractionRow) -> str:
    return _typed(rng, f"{row.prenom_exercice} {_cut(rng, row.nom_exercice.split()[0], 1)}")


def _family_given(rng: random.Random, row: ExtractionRow) -> str:
    return _typed(rng, f"{row.nom_exercice} {_cut(rng, row.prenom_exercice, 1)}")


def _first_keys(rng: random.Random, row: ExtractionRow) -> str:
    return row.nom_exercice[: rng.randint(1, 2)].lower()


def _structure(rng: random.Random, row: ExtractionRow) -> str:
    words = (row.enseigne_commerciale or row.raison_sociale or row.service_rattachement).split()
    if len(words) < 2:
        return _typed(rng, _cut(rng, words[0], 3)) if words else "chu"
    start = rng.randrange(len(words) - 1)
    return _typed(rng, f"{words[start]} {_cut(rng, words[start + 1], 2)}")


def _address(rng: random.Random, row: ExtractionRow) -> str:
    address = row.adresse_bal
    at = address.index("@")
    return address[: rng.randint(3, min(len(address), at + 5))]
