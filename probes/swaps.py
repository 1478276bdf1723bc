"""The counterfactual probe's swap engine. Every identity term of a text (names, pronouns, group
nouns; ``probes/data/counterfactual/swaps_en.csv`` and ``swaps_tr.csv``) is replaced by its
counterpart at once, giving one counterfactual per text ("John told his sister" → "Mary told her
brother"). Rules:

* matching is case-insensitive on whole words (no letter or digit on either side), Turkish-aware
  (I ↔ ı, İ ↔ i); multi-word terms ("kız kardeş", "African American") match across any run of
  spaces, and the longest term wins ("Black man" is a race swap, not a gender swap of "man");
* the replacement keeps the case of what it replaces: lower, UPPER, Title Case (every word) or a
  capitalised first letter; a term written exactly as in the swap list gets its counterpart as
  written there ("white man" → "Black man", "Mr" → "Ms");
* a term with two counterparts is resolved by its ``when`` column from the next word: English
  "her" → "his" before a word that is not a function word ("her book"), else "him" ("gave her
  a book", "saw her."); "his" → "her" before such a word, else "hers". This is a heuristic and
  fails on e.g. "I saw her yesterday" when "yesterday" is missing from the function-word list;
* Turkish suffixes: a term may be followed by inflectional suffixes — plural -lAr, possessive
  -(I)m, -(I)n, -(s)I, -(I)mIz, -(I)nIz, -lArI, case -(y)I, -(y)A, -DA, -DAn, -(n)In, -(y)lA and
  -ki (names only after an apostrophe: "Ayşe'nin"). The suffix is parsed into morphemes by
  regenerating it on the original stem (so only a correctly harmonised suffix matches: "kızgın"
  (angry) and "beyaz" (white) are not "kız" and "bey") and then regenerated on the new stem with
  vowel harmony, buffer letters (n, s, y) and d/t assimilation: "Ayşe'nin" → "Mehmet'in",
  "Mehmet'te" → "Ayşe'de", "kadınlar" → "erkekler", "ablam" → "ağabeyim". Stem softening comes from
  the ``stem_a``/``stem_b`` columns ("erkek" → "erkeğe"). Ambiguous endings are read as case
  endings first (-ı accusative before 3sg possessive, -ın genitive before 2sg possessive); verb
  forms and copulas are not parsed, so "kızdı" (got angry) is left alone. Turkish pronouns
  ("o") are gender-neutral and are never swapped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from audit.datafiles import files_in, read_table_csv
from audit.errors import ProbeError, brief
from probes.morphology_tr import (
    VOWELS,
    apply_case,
    case_pattern,
    lower,
    parse_suffix,
    regenerate,
    upper,
)

DATA_DIR = Path(__file__).parent / "data" / "counterfactual"
DEFAULT_SWAPS = (DATA_DIR / "swaps_en.csv", DATA_DIR / "swaps_tr.csv")
SWAP_COLUMNS = ("language", "category", "type", "group_a", "term_a", "group_b", "term_b")

FUNCTION_WORDS = frozenset(
    """a an the this that these those to of in on at by for with from about into onto over under
    and or but nor so yet as than because if when while after before since until though although
    is am are was were be been being has have had do does did will would shall should can could
    may might must not no never also too again there here now then once already later soon back
    up down out off away yesterday today tomorrow tonight please i you he she it we they me him her
    us them my your his its our their what who whom which whose how why where""".split()
)


@dataclass(frozen=True)
class SwapRule:
    """One direction of one swap-list row."""

    language: str
    category: str
    type: str
    source: str
    target: str
    from_group: str
    to_group: str
    when: str
    source_stem: str
    target_stem: str
    where: str  # file:line
    a_to_b: bool  # the source is the row's term_a


@dataclass
class Swap:
    original: str
    replacement: str
    category: str
    type: str
    from_group: str
    to_group: str
    start: int
    end: int
    new_start: int
    new_end: int
    a_to_b: bool


@dataclass
class SwapResult:
    text: str
    swaps: list[Swap] = field(default_factory=list)


def swap_files(swaps: str | Path | None) -> list[Path]:
    if swaps is None:
        return list(DEFAULT_SWAPS)
    return files_in(swaps, "*.csv", "swap list", folder="swap-list folder")


def load_swap_rules(swaps: str | Path | None = None) -> list[SwapRule]:
    """Both directions of every row; ambiguity (one term, two unconditional targets) is an error."""
    rules: list[SwapRule] = []
    for p in swap_files(swaps):
        df = read_table_csv(p, what="swap-list CSV")
        missing = [c for c in SWAP_COLUMNS if c not in df.columns]
        if missing:
            raise ProbeError(f"{p}: missing column(s) {missing}; found {list(df.columns)}")
        for line, r in zip(df.index, df.to_dict("records"), strict=True):
            where = f"{p}: line {line}"
            for c in SWAP_COLUMNS:
                if not str(r[c]).strip():
                    raise ProbeError(f"{where}: empty {c!r}")
            direction = (r.get("direction") or "both").strip()
            when = (r.get("when") or "").strip()
            if direction not in ("both", "a->b", "b->a"):
                raise ProbeError(f"{where}: direction must be both, a->b or b->a, got {brief(direction)}")
            if when not in ("", "noun", "other"):
                raise ProbeError(f"{where}: when must be empty, 'noun' or 'other', got {brief(when)}")
            if r["term_a"].strip() == r["term_b"].strip():
                raise ProbeError(f"{where}: term_a and term_b are the same ({brief(r['term_a'])})")
            a, b = " ".join(r["term_a"].split()), " ".join(r["term_b"].split())
            sa, sb = (r.get("stem_a") or "").strip(), (r.get("stem_b") or "").strip()
            lang, cat, typ = r["language"].strip(), r["category"].strip(), r["type"].strip()
            if direction in ("both", "a->b"):
                rules.append(SwapRule(lang, cat, typ, a, b, r["group_a"].strip(), r["group_b"].strip(), when, sa, sb,
                                      where, True))
            if direction in ("both", "b->a"):
                rules.append(SwapRule(lang, cat, typ, b, a, r["group_b"].strip(), r["group_a"].strip(), when, sb, sa,
                                      where, False))
    seen: dict[tuple[str, str, str], SwapRule] = {}
    for rule in rules:
        if rule.when:
            continue
        key = (rule.language, lower(rule.source, rule.language), "")
        if key in seen and seen[key].target != rule.target:
            raise ProbeError(
                f"{rule.where}: {rule.source!r} already maps to {seen[key].target!r} ({seen[key].where}); "
                f"give one row a 'when' condition or a direction"
            )
        seen[key] = rule
    return rules


class Swapper:
    """Finds and swaps identity terms in texts of one language."""

    def __init__(self, rules: Sequence[SwapRule], language: str, categories: Sequence[str] | None = None) -> None:
        self.language = language
        rs = [r for r in rules if r.language == language and (categories is None or r.category in categories)]
        by_source: dict[str, list[SwapRule]] = {}
        for r in rs:
            by_source.setdefault(lower(r.source, language), []).append(r)
        # conditional candidates first, then the unconditional fallback
        self.candidates = {k: sorted(v, key=lambda r: r.when == "") for k, v in by_source.items()}
        entries: list[tuple[str, str, bool]] = []  # (surface, source key, is vowel stem)
        for key, cands in self.candidates.items():
            entries.append((key, key, False))
            stems = {lower(c.source_stem, language) for c in cands if c.source_stem}
            entries += [(s, key, True) for s in stems]
        entries.sort(key=lambda e: -len(e[0]))
        self.entries = [(re.compile(r"\s+".join(re.escape(w) for w in s.split())), key, vs) for s, key, vs in entries]

    def __bool__(self) -> bool:
        return bool(self.candidates)

    @staticmethod
    def _next_word(low: str, pos: int) -> str:
        m = re.match(r"[ \t]*([^\W\d_]+)", low[pos:])
        return m.group(1) if m else ""

    def _pick(self, key: str, low: str, end: int) -> SwapRule:
        nxt = self._next_word(low, end)
        kind = "noun" if nxt and nxt not in FUNCTION_WORDS else "other"
        cands = self.candidates[key]
        return next((c for c in cands if c.when in ("", kind)), cands[0])

    def _match_at(self, text: str, low: str, i: int) -> tuple[int, int, str, str, SwapRule] | None:
        """(term end, word end, new term, new apostrophe + suffix, rule) of the longest term
        starting at ``i``, or None."""
        n = len(low)
        for pat, key, vowel_stem in self.entries:
            m = pat.match(low, i)
            if not m:
                continue
            e = m.end()
            cands = self.candidates[key]
            if self.language != "tr":
                if e < n and low[e].isalnum():
                    continue
                rule = self._pick(key, low, e)
                return e, e, rule.target, "", rule
            # Turkish: optional apostrophe and suffix letters up to the word's end
            j, apo = e, ""
            if j < n and low[j] in "'’":
                apo, j = text[j], j + 1
            k = j
            while k < n and low[k].isalpha():
                k += 1
            if k < n and low[k].isdigit():
                continue
            suffix = low[j:k]
            if apo and not suffix:  # a closing quote, not a suffix apostrophe
                k, j, apo = e, e, ""
            if suffix and not apo and cands[0].type == "name":
                continue  # names take suffixes only after an apostrophe
            if vowel_stem and (apo or not suffix or suffix[0] not in VOWELS):
                continue
            old_stem = lower(cands[0].source, self.language)
            morphemes = parse_suffix(old_stem, suffix, possessive=not apo) if suffix else []
            if morphemes is None:
                if not apo:
                    continue  # letters that are no inflection: another word ("kızgın", "beyaz")
                morphemes = []
            rule = self._pick(key, low, k)
            new_stem = lower(rule.target, self.language)
            new_suffix = regenerate(new_stem, morphemes) if morphemes else low[j:k]
            base = rule.target
            if new_suffix and new_suffix[0] in VOWELS and rule.target_stem and not apo:
                base = rule.target_stem
            orig_suffix = text[j:k]
            if orig_suffix and upper(orig_suffix, "tr") == orig_suffix and lower(orig_suffix, "tr") != orig_suffix:
                new_suffix = upper(new_suffix, "tr")
            elif orig_suffix and not morphemes:
                new_suffix = orig_suffix
            return e, k, base, apo + new_suffix, rule
        return None

    def swap(self, text: str) -> SwapResult:
        """Swap every identity term of ``text`` at once."""
        low = lower(text, self.language)
        out: list[str] = []
        swaps: list[Swap] = []
        i = last = new_len = 0
        n = len(text)
        while i < n:
            if (i > 0 and low[i - 1].isalnum()) or not low[i].isalpha():
                i += 1
                continue
            hit = self._match_at(text, low, i)
            if hit is None:
                i += 1
                continue
            term_end, end, base, tail, rule = hit
            surface = text[i:term_end]
            if " ".join(surface.split()) == rule.source:
                new = base + tail  # written as in the list: keep the list's natural case ("Black")
            else:
                new = apply_case(base, case_pattern(surface, self.language), self.language) + tail
            out.append(text[last:i])
            new_len += i - last
            swaps.append(Swap(text[i:end], new, rule.category, rule.type, rule.from_group, rule.to_group,
                              i, end, new_len, new_len + len(new), rule.a_to_b))
            out.append(new)
            new_len += len(new)
            i = last = end
        out.append(text[last:])
        return SwapResult("".join(out), swaps)


# --------------------------------------------------------------------------------------------
# texts
# --------------------------------------------------------------------------------------------

def make_counterfactuals(
    texts: pd.DataFrame, rules: Sequence[SwapRule], categories: Sequence[str] | None = None
) -> pd.DataFrame:
    """Swap every text; add swapped_text, swapped, n_swaps, category, terms, direction, spans."""
    swappers: dict[str, Swapper] = {}
    rows = []
    for r in texts.to_dict("records"):
        lang = r["language"]
        if lang not in swappers:
            swappers[lang] = Swapper(rules, lang, categories)
            if not swappers[lang]:
                raise ProbeError(f"{r['source']}: line {r['line']}: no swap rules for language {lang!r}")
        res = swappers[lang].swap(r["text"])
        cats = sorted({s.category for s in res.swaps})
        direction, g_from, g_to = 0, "", ""
        if res.swaps:
            # orientation by the first category's terms: a-version (+1) or b-version (−1)
            first = [s for s in res.swaps if s.category == cats[0]]
            n_a = sum(s.a_to_b for s in first)
            direction = int(np.sign(n_a - (len(first) - n_a)))
            lead = next((s for s in first if s.a_to_b == (direction >= 0)), first[0])
            g_from, g_to = (lead.from_group, lead.to_group) if direction else ("", "")
        rows.append({
            **r, "swapped_text": res.text, "swapped": bool(res.swaps), "n_swaps": len(res.swaps),
            "category": "+".join(cats) if cats else "none",
            "terms": "; ".join(f"{s.original}→{s.replacement}" for s in res.swaps),
            "from_group": g_from, "to_group": g_to, "direction": direction,
            "spans": [(s.start, s.end) for s in res.swaps], "new_spans": [(s.new_start, s.new_end) for s in res.swaps],
        })
    return pd.DataFrame(rows)
