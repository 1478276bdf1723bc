"""Word forms for swapping a word inside a text (:mod:`probes.swaps`): casing that keeps the text's
length (character offsets stay valid; Turkish i's from :mod:`audit.turkish`), and Turkish nominal
suffixes parsed on the old stem and regenerated on the new one with vowel harmony, buffer letters
and d/t assimilation (Göksel & Kerslake 2005, *Turkish: A Comprehensive Grammar*, "Vowel harmony")."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from audit.turkish import BACK_VOWELS, FRONT_VOWELS, LOWER_MAP, UPPER_MAP, VOICELESS

VOWELS = BACK_VOWELS | FRONT_VOWELS
_HIGH = {"a": "ı", "ı": "ı", "e": "i", "i": "i", "o": "u", "u": "u", "ö": "ü", "ü": "ü"}

# abstract morphemes: A = a/e, I = ı/i/u/ü, D = d/t; (x) = buffer letter after a vowel;
# (N) = pronominal n after a 3rd-person possessive; (Y) = n after that possessive, else y after a vowel
_PLURAL = [("pl", "lAr")]
_POSS = [("p1pl", "(I)mIz"), ("p2pl", "(I)nIz"), ("p3pl", "lArI"), ("p1sg", "(I)m"), ("p2sg", "(I)n"),
         ("p3sg", "(s)I")]
_CASE = [("abl", "(N)DAn"), ("loc", "(N)DA"), ("gen", "(n)In"), ("ins", "(y)lA"), ("acc", "(Y)I"),
         ("dat", "(Y)A")]
_KI = [("ki", "ki")]
_TOKEN = re.compile(r"\([A-Za-z]\)|.")


def _per_char(text: str, table: dict[str, str], case: Callable[[str], str]) -> str:
    """``table``, else ``case``, character by character; a character that would become two
    (``"ß".upper()``, ``"İ".lower()``) is kept, so the length is kept."""
    return "".join(x if len(x := table.get(c) or case(c)) == 1 else c for c in text)


def lower(text: str, language: str) -> str:
    """Lower-case, length kept (Turkish: I → ı, İ → i)."""
    return _per_char(text, LOWER_MAP if language == "tr" else {}, str.lower)


def upper(text: str, language: str) -> str:
    """Upper-case, length kept (Turkish: i → İ, ı → I)."""
    return _per_char(text, UPPER_MAP if language == "tr" else {}, str.upper)


def capitalize_first(text: str, language: str) -> str:
    """Upper-case the first character only (Turkish-aware)."""
    return upper(text[:1], language) + text[1:] if text else text


def case_pattern(surface: str, language: str) -> str:
    """``lower``, ``upper``, ``title`` (every word capitalised), ``first`` or ``asis``."""
    letters = [c for c in surface if c.isalpha()]
    if not letters:
        return "asis"
    if len(letters) > 1 and all(upper(c, language) == c and lower(c, language) != c for c in letters):
        return "upper"
    if lower(surface, language) == surface:
        return "lower"
    words = surface.split()
    if all(w[:1] == upper(w[:1], language) and lower(w[1:], language) == w[1:] for w in words):
        return "title" if len(words) > 1 else "first"
    if surface[:1] == upper(surface[:1], language) and surface[:1] != lower(surface[:1], language):
        return "first"
    return "asis"


def apply_case(word: str, pattern: str, language: str) -> str:
    """Give ``word`` the case pattern of the text it replaces."""
    if pattern == "title":
        return " ".join(capitalize_first(lower(w, language), language) for w in word.split(" "))
    case = {"lower": lower, "upper": upper, "first": capitalize_first}.get(pattern)
    return case(word, language) if case else word


def _last_vowel(s: str) -> str:
    return next((c for c in reversed(s) if c in VOWELS), "e")


def realize(abstract: str, prev: str, prev_tag: str = "") -> str:
    """The surface form of an abstract morpheme after ``prev`` (the lower-cased word so far)."""
    out = ""
    for t in _TOKEN.findall(abstract):
        ctx = prev + out
        end_vowel = bool(ctx) and ctx[-1] in VOWELS
        if t == "(I)":
            out += "" if end_vowel else _HIGH[_last_vowel(ctx)]
        elif t in ("(s)", "(y)", "(n)"):
            out += t[1] if end_vowel else ""
        elif t == "(N)":
            out += "n" if prev_tag in ("p3sg", "p3pl") else ""
        elif t == "(Y)":
            out += "n" if prev_tag in ("p3sg", "p3pl") else "y" if end_vowel else ""
        elif t == "A":
            out += "a" if _last_vowel(ctx) in BACK_VOWELS else "e"
        elif t == "I":
            out += _HIGH[_last_vowel(ctx)]
        elif t == "D":
            out += "t" if ctx and ctx[-1] in VOICELESS else "d"
        else:
            out += t
    return out


def parse_suffix(stem: str, suffix: str, *, possessive: bool = True) -> list[tuple[str, str]] | None:
    """Morphemes ``[(tag, abstract)]`` that regenerate ``suffix`` exactly on ``stem`` (both lower
    case), or None. Slots in order: plural, possessive (only when ``possessive``), case, -ki.
    Readings without a possessive are tried first (case endings win ambiguities)."""
    slots: list[list[tuple[str, str] | None]] = [
        [*_PLURAL, None],
        [None, *_POSS] if possessive else [None],
        [*_CASE, None],
        [*_KI, None],
    ]

    def search(i: int, pos: int, word: str, tag: str, acc: list[tuple[str, str]]) -> list[tuple[str, str]] | None:
        if i == len(slots):
            return acc if pos == len(suffix) else None
        for m in slots[i]:
            if m is None:
                res = search(i + 1, pos, word, tag, acc)
            else:
                s = realize(m[1], word, tag)
                if not s or not suffix.startswith(s, pos):
                    continue
                res = search(i + 1, pos + len(s), word + s, m[0], [*acc, m])
            if res is not None:
                return res
        return None

    return search(0, 0, stem, "", [])


def regenerate(stem: str, morphemes: Sequence[tuple[str, str]]) -> str:
    """The suffix of ``morphemes`` realised after ``stem``."""
    word, tag = stem, ""
    for m_tag, abstract in morphemes:
        word += realize(abstract, word, tag)
        tag = m_tag
    return word[len(stem):]


