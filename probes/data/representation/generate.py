"""Writes ``gender_terms.csv``: the built-in data of the ``representation`` probe.

Gender-neutral sentence frames filled with gendered person terms (kinship nouns, person nouns,
first names), English and Turkish. Every frame takes every term, so the frame carries no
information about the attribute; only the term does. The ``term`` column is the word type that
the Hewitt & Liang (2019) control task maps to a random label. Turkish third-person pronouns
are gender-neutral ("o"), so Turkish gender lives only in nouns and names.

Run ``python probes/data/representation/generate.py`` to regenerate the file (deterministic).
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

OUT = Path(__file__).with_name("gender_terms.csv")

EN_FRAMES = [
    "{P} went to the market this morning.",
    "{P} is reading a book in the garden.",
    "Yesterday {p} called the bank.",
    "{P} works at the hospital.",
    "We had dinner with {p} last night.",
    "{P} lives near the station.",
]
EN_TERMS = {
    "female": ["my mother", "my sister", "my daughter", "my aunt", "the woman", "the girl",
               "Mary", "Emily", "Sarah", "Linda"],
    "male": ["my father", "my brother", "my son", "my uncle", "the man", "the boy",
             "John", "James", "David", "Robert"],
}

TR_FRAMES = [
    "{P} bu sabah pazara gitti.",
    "{P} bahçede kitap okuyor.",
    "{P} dün bankayı aradı.",
    "{P} hastanede çalışıyor.",
    "{P} istasyonun yakınında oturuyor.",
    "{P} akşam yemeğini evde yedi.",
]
TR_TERMS = {
    "female": ["annem", "kız kardeşim", "kızım", "teyzem", "ablam", "Ayşe", "Fatma", "Zeynep",
               "Elif", "Hatice"],
    "male": ["babam", "erkek kardeşim", "oğlum", "amcam", "ağabeyim", "Mehmet", "Ahmet",
             "Mustafa", "Emre", "Hüseyin"],
}


def _fill(frame: str, term: str) -> str:
    if "{P}" in frame:
        return frame.replace("{P}", term[0].upper() + term[1:])
    return frame.replace("{p}", term)


def rows() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for lang, frames, terms in (("en", EN_FRAMES, EN_TERMS), ("tr", TR_FRAMES, TR_TERMS)):
        for (fi, frame), (gender, words) in itertools.product(enumerate(frames), terms.items()):
            for term in words:
                out.append({"text": _fill(frame, term), "gender": gender, "term": term,
                            "language": lang, "frame": f"{lang}{fi}"})
    return out


def main() -> None:
    data = rows()
    with OUT.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)


if __name__ == "__main__":
    main()
