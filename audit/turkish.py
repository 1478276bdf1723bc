"""Turkish text rules the probes and reports need: casing and suffix harmony.

Casing. Turkish has two i's: dotted ``i``/``İ`` and dotless ``ı``/``I``. Python's ``str.lower`` and
``str.upper`` follow the default Unicode mapping, which is wrong for Turkish: ``"I".lower()`` is
``"i"`` (Turkish: ``"ı"``), ``"İ".lower()`` is ``"i̇"`` (``i`` + U+0307 COMBINING DOT ABOVE, two code
points), and ``"i".upper()`` is ``"I"`` (Turkish: ``"İ"``). So ``"IRAK".lower()`` gives ``"irak"``
and ``"istanbul".upper()`` gives ``"ISTANBUL"``. :func:`tr_lower` and :func:`tr_upper`
apply the Turkish special casing of Unicode's ``SpecialCasing.txt``
(the ``tr``/``az`` conditions) first and the default mapping for every other letter.

Suffix harmony. A case suffix on a proper noun is written after an apostrophe and takes the
allomorph the noun's sound requires (Göksel & Kerslake 2005, *Turkish: A Comprehensive Grammar*,
the chapter "Vowel harmony" of Part 1, phonology; the book writes a suffix's alternating letters
as capitals, ablative ``-DAn``, locative ``-DA``):

* ablative ``-DAn``: ``'dan``/``'den``/``'tan``/``'ten``; locative ``-DA``: ``'da``/``'de``/``'ta``/``'te``;
* the vowel is ``a`` after a back last vowel (a, ı, o, u) and ``e`` after a front one (e, i, ö, ü);
* the consonant is ``t`` after a voiceless consonant (f, s, t, k, ç, ş, h, p: "fıstıkçı şahap"),
  else ``d``.

So ``Almanya'dan``, ``Irak'tan``, ``Mısır'dan``, ``Fas'tan``, ``Çin'den``, ``Kore'de``. The rule reads
the written form; foreign names whose pronunciation differs from their spelling are outside it.
"""

from __future__ import annotations

import unicodedata

#: the Turkish special casing (Unicode SpecialCasing.txt, tr/az conditions)
LOWER_MAP = {"I": "ı", "İ": "i"}
UPPER_MAP = {"i": "İ", "ı": "I"}
_LOWER = str.maketrans(LOWER_MAP)
_UPPER = str.maketrans(UPPER_MAP)

BACK_VOWELS = frozenset("aıou")
FRONT_VOWELS = frozenset("eiöü")
#: voiceless consonants ("fıstıkçı şahap"): a D-initial suffix becomes t after them
VOICELESS = frozenset("fstkçşhp")
#: the suffixes :func:`suffix` knows, by case
CASES = ("ablative", "locative")


def tr_lower(text: str) -> str:
    """Lower case with Turkish i's: ``I`` → ``ı``, ``İ`` → ``i`` (``"IRAK"`` → ``"ırak"``)."""
    return unicodedata.normalize("NFC", text).translate(_LOWER).lower()


def tr_upper(text: str) -> str:
    """Upper case with Turkish i's: ``i`` → ``İ``, ``ı`` → ``I`` (``"istanbul"`` → ``"İSTANBUL"``)."""
    return unicodedata.normalize("NFC", text).translate(_UPPER).upper()


def tr_casefold(text: str) -> str:
    """The comparison form for matching Turkish words regardless of case: :func:`tr_lower`, so
    ``"IRAK"``, ``"Irak"`` and ``"ırak"`` match each other and not ``"irak"``."""
    return tr_lower(text)


def case_fold(text: str, language: str) -> str:
    """Lower case for matching: Turkish rules when ``language`` is ``"tr"``, else ``str.lower``
    (English "I" must stay "i", so one rule cannot serve both)."""
    return tr_lower(text) if language == "tr" else text.lower()


def last_vowel(word: str) -> str:
    """The last vowel of the last word of ``word`` (lower-cased the Turkish way); ``ValueError``
    when there is none (harmony is undefined)."""
    w = tr_lower(word.strip().split(" ")[-1] if word.strip() else "")
    for ch in reversed(w):
        if ch in BACK_VOWELS or ch in FRONT_VOWELS:
            return ch
    raise ValueError(f"{word!r} has no Turkish vowel; suffix harmony cannot choose an allomorph")


def suffix(word: str, case: str) -> str:
    """The case suffix ``word`` takes, with its apostrophe: ablative ``'dan/'den/'tan/'ten``,
    locative ``'da/'de/'ta/'te`` (module docstring for the rule)."""
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; use one of {CASES}")
    vowel = "a" if last_vowel(word) in BACK_VOWELS else "e"
    final = tr_lower(word.rstrip())[-1:]
    consonant = "t" if final in VOICELESS else "d"
    return f"'{consonant}{vowel}{'n' if case == 'ablative' else ''}"


def attach(word: str, case: str) -> str:
    """``word`` with its harmonised case suffix: ``attach("Irak", "ablative")`` → ``"Irak'tan"``."""
    return word.rstrip() + suffix(word, case)
