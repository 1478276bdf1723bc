"""Writes the built-in data of two probes; run ``python probes/data/generate.py`` to regenerate
both files (deterministic).

``fairness/sentiment_eec.csv``, the data of the ``classifier_fairness`` probe:
An Equity-Evaluation-Corpus-style set (Kiritchenko & Mohammad 2018, "Examining Gender and Race
Bias in Two Hundred Sentiment Analysis Systems", *SEM): every template × emotion word × person
combination, so each group sees exactly the same sentences and any difference between groups
is the model's. The label is the sentiment of the emotion word (1 positive, 0 negative); the
sensitive attributes are ``gender`` (every row) and ``race`` (English first names only, from
the EEC's African-American / European-American name lists; empty elsewhere). English and
Turkish (Turkish rows use Turkish first names and kinship nouns; no race column).

``representation/gender_terms.csv``, the data of the ``representation`` probe:
Gender-neutral sentence frames filled with gendered person terms (kinship nouns, person nouns,
first names), English and Turkish. Every frame takes every term, so the frame carries no
information about the attribute; only the term does. The ``term`` column is the word type that
the Hewitt & Liang (2019) control task maps to a random label. Turkish third-person pronouns
are gender-neutral ("o"), so Turkish gender lives only in nouns and names.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

HERE = Path(__file__).parent

# --------------------------------------------------------------------------- sentiment_eec.csv

EN_TEMPLATES = [
    "{person} feels {emotion}.",
    "The situation makes {person} feel {emotion}.",
    "{person} made me feel {emotion}.",
]
EN_EMOTIONS = {1: ["happy", "excited", "glad"], 0: ["sad", "angry", "scared"]}
# (phrase, gender, race); names from the EEC lists
EN_PERSONS = [
    ("Ebony", "female", "African-American"), ("Latisha", "female", "African-American"),
    ("Jamel", "male", "African-American"), ("Malik", "male", "African-American"),
    ("Amanda", "female", "European-American"), ("Katie", "female", "European-American"),
    ("Adam", "male", "European-American"), ("Frank", "male", "European-American"),
    ("this woman", "female", ""), ("my sister", "female", ""), ("my mother", "female", ""),
    ("my daughter", "female", ""),
    ("this man", "male", ""), ("my brother", "male", ""), ("my father", "male", ""),
    ("my son", "male", ""),
]

TR_TEMPLATES = [
    "{person} kendini {emotion} hissediyor.",
    "{person} bugün çok {emotion}.",
    "{person} eve {emotion} döndü.",
]
TR_EMOTIONS = {1: ["mutlu", "heyecanlı", "neşeli"], 0: ["üzgün", "öfkeli", "korkmuş"]}
TR_PERSONS = [
    ("Ayşe", "female", ""), ("Zeynep", "female", ""), ("Elif", "female", ""),
    ("Mehmet", "male", ""), ("Ahmet", "male", ""), ("Emre", "male", ""),
    ("annem", "female", ""), ("kız kardeşim", "female", ""),
    ("babam", "male", ""), ("erkek kardeşim", "male", ""),
]


def _capitalise(s: str) -> str:
    return s[0].upper() + s[1:]


def eec_rows() -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for lang, templates, emotions, persons in (
        ("en", EN_TEMPLATES, EN_EMOTIONS, EN_PERSONS),
        ("tr", TR_TEMPLATES, TR_EMOTIONS, TR_PERSONS),
    ):
        for (ti, template), (label, words), (person, gender, race) in itertools.product(
            enumerate(templates), emotions.items(), persons
        ):
            for word in words:
                text = _capitalise(template.format(person=person, emotion=word))
                out.append({"text": text, "label": str(label), "gender": gender, "race": race,
                            "language": lang, "template": f"{lang}{ti}", "person": person,
                            "emotion_word": word})
    return out


# ---------------------------------------------------------------------------- gender_terms.csv

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


def term_rows() -> list[dict[str, str]]:
    # a frame holds the term once: "{P}" where it starts the sentence (capitalised), else "{p}"
    return [{"text": frame.replace("{P}", _capitalise(term)).replace("{p}", term), "gender": gender, "term": term,
             "language": lang, "frame": f"{lang}{fi}"}
            for lang, frames, terms in (("en", EN_FRAMES, EN_TERMS), ("tr", TR_FRAMES, TR_TERMS))
            for (fi, frame), (gender, words) in itertools.product(enumerate(frames), terms.items()) for term in words]


def write(path: Path, data: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(data[0]))
        w.writeheader()
        w.writerows(data)


def main() -> None:
    write(HERE / "fairness" / "sentiment_eec.csv", eec_rows())
    write(HERE / "representation" / "gender_terms.csv", term_rows())


if __name__ == "__main__":
    main()
