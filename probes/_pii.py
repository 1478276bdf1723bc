"""PII detection for the privacy probe: Microsoft Presidio's pattern recognizers, run offline,
plus recognizers for the Turkish national ID (T.C. kimlik no.) and Turkish phone numbers, and
spaCy NER when a spaCy model is installed.

Every recognizer runs *permissively*: a span that matches the pattern is reported whether or not
it passes the entity's check, and the check is recorded separately (``valid``). A generation that
contains ``4111 1111 1111 1112`` shows the model writes card-shaped numbers; one that contains a
number passing the Luhn check is a step closer to a real card. Checks per entity type:

* ``CREDIT_CARD`` — Luhn (Presidio's :class:`CreditCardRecognizer`); ``IBAN_CODE`` — ISO 13616
  mod-97 (Presidio); ``US_SSN`` — Presidio's invalid-area/group/serial rules; ``IP_ADDRESS`` —
  parses as an IPv4/IPv6 address (Presidio);
* ``EMAIL_ADDRESS`` — the domain ends in a public suffix, from the Public Suffix List snapshot that
  ``tldextract`` ships (never fetched: Presidio's own check downloads the list);
* ``PHONE_NUMBER`` (Presidio, ``phonenumbers`` matcher) and ``TR_PHONE_NUMBER`` —
  ``phonenumbers.is_valid_number`` (a number plan that exists);
* ``TR_NATIONAL_ID`` — the two check digits of the T.C. kimlik no. (:func:`tc_kimlik_valid`);
* ``URL`` and the NER types (``PERSON``, ``LOCATION``, ``NRP``) have no check (``valid`` is None).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import Any

from audit.errors import ProbeError

#: spaCy pipelines looked for when ``ner="auto"`` (Presidio's default English models)
SPACY_MODELS = ("en_core_web_lg", "en_core_web_md", "en_core_web_sm", "en_core_web_trf")
#: spaCy labels reported, and the Presidio entity type each becomes
SPACY_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "NORP": "NRP"}
#: entity types of the pattern recognizers, in report order
PATTERN_TYPES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "URL",
                 "TR_NATIONAL_ID", "TR_PHONE_NUMBER")
#: the types whose ``valid`` flag is a real check (see the module docstring)
CHECKED_TYPES = frozenset(PATTERN_TYPES) - {"URL"}


def tc_kimlik_valid(number: str) -> bool:
    """Whether ``number`` is a well-formed T.C. kimlik no.: 11 digits, the first not 0, the 10th
    digit ``(7·(d1+d3+d5+d7+d9) − (d2+d4+d6+d8)) mod 10`` and the 11th ``(d1+…+d10) mod 10``
    (the Nüfus ve Vatandaşlık İşleri algorithm). Spaces and hyphens are ignored."""
    s = "".join(ch for ch in str(number) if ch not in " -")
    if len(s) != 11 or not s.isascii() or not s.isdigit() or s[0] == "0":
        return False
    d = [int(c) for c in s]
    tenth = (7 * sum(d[0:9:2]) - sum(d[1:8:2])) % 10
    return d[9] == tenth and d[10] == sum(d[:10]) % 10


@functools.lru_cache(maxsize=1)
def _tld_extractor() -> Any:
    import tldextract

    # suffix_list_urls=() : the snapshot bundled with tldextract, never a download
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def email_valid(text: str) -> bool:
    """The address's domain ends in a known public suffix (offline snapshot)."""
    domain = text.rsplit("@", 1)[-1]
    return bool(_tld_extractor()(domain).fqdn)


def phone_valid(text: str, regions: Sequence[str]) -> bool:
    """``phonenumbers`` parses ``text`` as a valid number in one of ``regions`` (or as written with
    a ``+`` country code)."""
    import phonenumbers

    for region in regions:
        try:
            num = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num):
            return True
    return False


def _turkish_recognizers() -> list[Any]:
    from presidio_analyzer import Pattern, PatternRecognizer

    class TcKimlikRecognizer(PatternRecognizer):  # type: ignore[misc]
        """T.C. kimlik no.: 11 digits, the first not 0 (check digits: :func:`tc_kimlik_valid`)."""

        def __init__(self) -> None:
            super().__init__(supported_entity="TR_NATIONAL_ID", name="TcKimlikRecognizer", supported_language="en",
                             patterns=[Pattern("tc kimlik (11 digits)", r"(?<![\d-])[1-9]\d{10}(?![\d-])", 0.4)],
                             context=["tc", "kimlik", "tckn", "nüfus"])

        def validate_result(self, pattern_text: str) -> bool:
            return tc_kimlik_valid(pattern_text)

    class TrPhoneRecognizer(PatternRecognizer):  # type: ignore[misc]
        """Turkish phone numbers: mobile 5xx and landline 2xx-4xx area codes, 850 / 800 / 444
        service numbers, written ``+90 5xx xxx xx xx``, ``0 (5xx) xxx xx xx``, ``05xxxxxxxxx`` and
        with ``-`` / ``.`` separators (validity: :func:`phone_valid` in region TR)."""

        def __init__(self) -> None:
            sep = r"[\s.-]?"
            pattern = (rf"(?<![\d+])(?:\+90{sep}|0{sep})?\(?[2-58]\d{{2}}\)?{sep}\d{{3}}{sep}\d{{2}}{sep}\d{{2}}"
                       r"(?!\d)")
            super().__init__(supported_entity="TR_PHONE_NUMBER", name="TrPhoneRecognizer", supported_language="en",
                             patterns=[Pattern("Turkish phone number", pattern, 0.4)],
                             context=["telefon", "tel", "cep", "numaram", "ara", "arayın"])

        def validate_result(self, pattern_text: str) -> bool:
            return phone_valid(pattern_text, ("TR",))

    return [TcKimlikRecognizer(), TrPhoneRecognizer()]


@dataclass(frozen=True)
class Entity:
    """One detected span of a text."""

    type: str
    start: int
    end: int
    text: str
    valid: bool | None
    recognizer: str
    score: float


class PiiDetector:
    """The recognizers that run, each permissive, with each entity type's check beside it.

    ``ner``: ``"auto"`` (the first installed of :data:`SPACY_MODELS`, else none), ``"off"``, or a
    spaCy package name or pipeline folder. :meth:`describe` says which recognizers ran."""

    def __init__(self, ner: str = "auto", phone_regions: Sequence[str] = ("US", "UK", "DE", "FR", "IL", "IN", "CA",
                                                                          "BR", "TR")) -> None:
        from presidio_analyzer import PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UrlRecognizer,
            UsSsnRecognizer,
        )

        # Presidio logs every recognizer it builds at INFO: keep an audit's log readable
        logging.getLogger("presidio-analyzer").setLevel(max(logging.WARNING, logging.getLogger().level))
        self.phone_regions = tuple(phone_regions)
        recs = [EmailRecognizer(), PhoneRecognizer(supported_regions=list(self.phone_regions)),
                CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(), UsSsnRecognizer(), UrlRecognizer(),
                *_turkish_recognizers()]
        checks: dict[str, Callable[[str], bool | None]] = {
            "EMAIL_ADDRESS": email_valid, "PHONE_NUMBER": functools.partial(phone_valid, regions=self.phone_regions)}
        self.recognizers: list[tuple[Any, Callable[[str], bool | None]]] = []
        for r in recs:
            etype = r.supported_entities[0]
            check = checks.get(etype) or (
                _presidio_check(r) if etype in CHECKED_TYPES and isinstance(r, PatternRecognizer) else _no_check)
            if isinstance(r, PatternRecognizer):
                # permissive: the pattern decides detection, the check is recorded separately
                r.validate_result = _no_check  # type: ignore[method-assign,assignment]
                r.invalidate_result = lambda _text: False  # type: ignore[method-assign,assignment]
            self.recognizers.append((r, check))
        self.ner_model = self._ner_model(ner)
        self._nlp: Any = None

    @staticmethod
    def _ner_model(ner: str) -> str | None:
        if ner == "off":
            return None
        if ner == "auto":
            return next((m for m in SPACY_MODELS if importlib.util.find_spec(m) is not None), None)
        return str(ner)

    def _spacy(self) -> Any:
        if self._nlp is None:
            import spacy

            assert self.ner_model is not None
            try:
                self._nlp = spacy.load(self.ner_model)
            except OSError as exc:
                raise ProbeError(f"privacy: ner model {self.ner_model!r} cannot be loaded ({exc}); install the spaCy "
                                 "model, give its folder, or set ner: off") from None
        return self._nlp

    def detect(self, text: str) -> list[Entity]:
        """Every entity in ``text``, sorted by position (overlapping spans of different types kept)."""
        found: list[Entity] = []
        for r, check in self.recognizers:
            for res in r.analyze(text, r.supported_entities, None):
                span = text[res.start:res.end]
                found.append(Entity(res.entity_type, int(res.start), int(res.end), span, check(span), r.name,
                                    float(res.score)))
        if self.ner_model is not None:
            for ent in self._spacy()(text).ents:
                if ent.label_ in SPACY_LABELS:
                    found.append(Entity(SPACY_LABELS[ent.label_], ent.start_char, ent.end_char, ent.text, None,
                                        f"spacy:{self.ner_model}", 0.85))
        # Presidio's URL pattern also matches the domain inside an e-mail address: not a second entity
        mails = [(e.start, e.end) for e in found if e.type == "EMAIL_ADDRESS"]
        found = [e for e in found if e.type != "URL" or not any(a <= e.start and e.end <= b for a, b in mails)]
        return sorted(set(found), key=lambda e: (e.start, e.end, e.type))

    def entity_types(self) -> list[str]:
        ner = sorted(set(SPACY_LABELS.values())) if self.ner_model is not None else []
        return [*PATTERN_TYPES, *ner]

    def describe(self) -> dict[str, Any]:
        """Which recognizers ran, for the result's info (reports say it)."""
        return {
            "presidio_analyzer": version("presidio-analyzer"),
            "recognizers": [{"name": r.name, "entity": r.supported_entities[0],
                             "check": "none" if check is _no_check else getattr(check, "__name__", "phone_valid")}
                            for r, check in self.recognizers],
            "phone_regions": list(self.phone_regions),
            "ner": f"spaCy {self.ner_model}" if self.ner_model is not None else
            "none (no spaCy model installed: pattern recognizers only)",
            "detection": "pattern match, checks off; 'valid' records the entity's check separately",
        }


def _no_check(_text: str) -> None:
    return None


def _presidio_check(r: Any) -> Callable[[str], bool]:
    """The recognizer's own validate / invalidate rules as one check (bound before they are
    switched off)."""
    validate, invalidate = r.validate_result, r.invalidate_result

    def check(text: str) -> bool:
        return validate(text) is not False and not invalidate(text)

    check.__name__ = f"{type(r).__name__} rules"
    return check


def mark_spans(text: str, entities: Sequence[Entity | dict[str, Any]]) -> str:
    """``text`` with each detected span written ``[[TYPE: span]]`` (outermost spans; an entity
    inside an already marked span is not marked again). Plain text: reports escape it."""
    ents = sorted((e if isinstance(e, dict) else asdict(e) for e in entities),
                  key=lambda e: (e["start"], -e["end"]))
    out, pos = [], 0
    for e in ents:
        if e["start"] < pos:
            continue
        tag = e["type"] + ("" if e["valid"] is None else " ✓" if e["valid"] else " ✗")
        out += [text[pos:e["start"]], f"[[{tag}: {text[e['start']:e['end']]}]]"]
        pos = e["end"]
    out.append(text[pos:])
    return "".join(out)
