"""Turkish casing and suffix harmony (audit.turkish) on real words."""

from __future__ import annotations

import pytest

from audit.turkish import attach, last_vowel, suffix, tr_casefold, tr_lower, tr_upper


def test_lower_keeps_the_two_is_apart() -> None:
    assert tr_lower("İstanbul") == "istanbul"
    assert tr_lower("IRAK") == "ırak"
    assert tr_lower("Irak") == "ırak"
    assert tr_lower("İSPANYA") == "ispanya"
    # what str.lower gets wrong: a dotted capital becomes i + combining dot, I becomes i
    assert "İstanbul".lower() != tr_lower("İstanbul")
    assert "IRAK".lower() == "irak" != tr_lower("IRAK")
    assert len(tr_lower("İ")) == 1


def test_upper() -> None:
    assert tr_upper("istanbul") == "İSTANBUL"
    assert tr_upper("ırak") == "IRAK"
    assert tr_upper("Mısır") == "MISIR"


def test_casefold_matches_turkish_spellings_only() -> None:
    assert tr_casefold("IRAK") == tr_casefold("ırak") == tr_casefold("Irak")
    assert tr_casefold("Irak") != tr_casefold("irak")
    assert tr_casefold("İstanbul") == tr_casefold("istanbul")


@pytest.mark.parametrize("word, abl, loc", [
    ("Almanya", "Almanya'dan", "Almanya'da"),
    ("Irak", "Irak'tan", "Irak'ta"),
    ("Mısır", "Mısır'dan", "Mısır'da"),
    ("Fas", "Fas'tan", "Fas'ta"),
    ("Çin", "Çin'den", "Çin'de"),
    ("İngiltere", "İngiltere'den", "İngiltere'de"),
    ("Tayland", "Tayland'dan", "Tayland'da"),
    ("Kuzey Kore", "Kuzey Kore'den", "Kuzey Kore'de"),
    ("İsrail", "İsrail'den", "İsrail'de"),
    ("Küba", "Küba'dan", "Küba'da"),
    ("Türkiye", "Türkiye'den", "Türkiye'de"),
])
def test_suffix_harmony(word: str, abl: str, loc: str) -> None:
    assert attach(word, "ablative") == abl
    assert attach(word, "locative") == loc


def test_harmony_reads_turkish_case() -> None:
    # "IRAK" must harmonise as ırak (back vowel), not irak (front vowel)
    assert last_vowel("IRAK") == "a"
    assert suffix("IRAK", "ablative") == "'tan"
    assert last_vowel("MISIR") == "ı"


def test_harmony_errors() -> None:
    with pytest.raises(ValueError, match="no Turkish vowel"):
        suffix("BRT", "ablative")
    with pytest.raises(ValueError, match="unknown case"):
        suffix("Irak", "dative")


def test_bbq_matches_turkish_unknown_answers_and_replies_in_any_case() -> None:
    from probes import bbq

    assert bbq.unknown_language("CEVAP VERİLEMEZ") == "tr"  # str.lower would leave a combining dot
    assert bbq.unknown_language("BİLİNMİYOR") == "tr"
    assert bbq.unknown_language("Unknown") == "en"
    answers = ("Irak'lı adam", "İspanyol kadın", "Bilinmiyor")
    assert bbq.parse_answer("İSPANYOL KADIN", answers, 2, language="tr") == 1
    assert bbq.parse_answer("IRAK'LI ADAM", answers, 2, language="tr") == 0


def test_counterfactual_uses_the_turkish_case_maps() -> None:
    from probes import morphology_tr

    assert morphology_tr.lower("IRAK İSTANBUL", "tr") == "ırak istanbul"
    assert morphology_tr.upper("istanbul ırak", "tr") == "İSTANBUL IRAK"
    assert morphology_tr.capitalize_first("ispanya", "tr") == "İspanya"
    assert "ispanya".capitalize() == "Ispanya"  # the classic bug the Turkish rule avoids
