"""XWEAT: English WEAT tests carried into Turkish with a translation map, and the cross-lingual
comparison of their effect sizes (Lauscher & Glavaš 2019, "Are We Consistently Biased?
Multidimensional Analysis of Biases in Distributional Word Vectors", *SEM).

The map is XWEAT's ``vocab_en_tr.csv`` (``english,turkish`` per line, no header). It has no
licence, so the project never ships it: the path is given at run time (``vocab:``). A test file
in the SEAT/WEAT format (``{targ1, targ2, attr1, attr2: {category, examples}}``, word level:
``../shared/data/seat/weat*.jsonl``) becomes a Turkish test by looking up every example.

Translation checks, each a warning that names the words:

* an English word missing from the map is left out of both languages;
* a capitalised English word (a first name) rendered as a lower-case or multi-word Turkish word is
  a name translated as a common noun — XWEAT's known error class (``Brad`` → ``başsız çivi``,
  "headless nail"; ``Mike`` → ``mikrofon``): flagged, and left out with ``drop_suspect: true``
  (default);
* two English words of one set mapped to the same Turkish word are kept once (the set shrinks).

The comparison: for each test, WEAT's d (Caliskan et al. 2017; :mod:`probes.seat`) on the
aligned English words and on their Turkish translations, embedded by the same model, and the gap
d_tr − d_en. Its interval is a paired percentile bootstrap: the same resampled words (X, Y, A,
B independently, as SEAT's interval) in both languages. The summary averages the gap over tests
with a bootstrap CI over tests.

``python -m probes.xweat EN_TEST --vocab vocab_en_tr.csv --out tr_test.json`` writes the Turkish
test file (and prints the warnings).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeInt, StrictBool, field_validator

from audit import scoring
from audit.datafiles import read_text_file
from audit.options import BatchingOptions, comma_list
from audit.probe import Probe, ProbeError, register_probe
from audit.results import MetricInfo, MetricValue, ProbeResult
from audit.stats import CONFIDENCE, group_breakdown, mean_metric
from audit.turkish import tr_lower
from probes.seat import (
    SETS,
    SeatTest,
    _test_seed,
    load_seat,
    resample_weights,
    resampled_effect_sizes,
    weat,
)

if TYPE_CHECKING:
    from audit.models import ModelHandle

METRICS = {
    "effect_size_gap": MetricInfo(
        "effect_size_gap", "mean over tests of WEAT d in Turkish minus d in English on the same (translated) words "
        "(0: the bias carries over unchanged)", ideal=0.0, higher_is_better=None,
        reference="Lauscher & Glavaš 2019 (XWEAT)",
    ),
    "mean_abs_effect_size_en": MetricInfo(
        "mean_abs_effect_size_en", "mean |d| of the English tests (aligned words)", ideal=0.0, higher_is_better=False,
        reference="Caliskan et al. 2017",
    ),
    "mean_abs_effect_size_tr": MetricInfo(
        "mean_abs_effect_size_tr", "mean |d| of the Turkish translations", ideal=0.0, higher_is_better=False,
        reference="Lauscher & Glavaš 2019 (XWEAT)",
    ),
}


def load_vocab(path: str | Path) -> dict[str, str]:
    """The XWEAT map: ``english,turkish`` lines (no header). Errors name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"xweat: translation map not found: {p} (XWEAT's vocab_en_tr.csv)")
    out: dict[str, str] = {}
    for lineno, line in enumerate(read_text_file(p, what="XWEAT translation map").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ProbeError(f"{p}: line {lineno}: expected 'english,turkish', got {line!r}")
        en, tr = parts[0].strip(), parts[1].strip()
        if en in out and out[en] != tr:
            raise ProbeError(f"{p}: line {lineno}: {en!r} is translated twice ({out[en]!r} and {tr!r})")
        out[en] = tr
    if not out:
        raise ProbeError(f"{p}: the translation map is empty")
    return out


def suspect(en: str, tr: str) -> bool:
    """A first name rendered as a common noun: capitalised English, lower-case or multi-word Turkish."""
    return en[:1].isupper() and en[1:] == en[1:].lower() and (tr[:1] != tr[:1].upper() or " " in tr)


@dataclass
class Translation:
    """One test in both languages, aligned word for word."""

    english: SeatTest
    turkish: SeatTest
    aligned: dict[str, list[tuple[str, str]]]
    missing: list[str] = field(default_factory=list)
    suspects: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)

    def warnings(self) -> list[str]:
        found = ((self.missing, f"{len(self.missing)} word(s) not in the map, left out"),
                 (self.suspects, "name(s) translated as common nouns"),
                 (self.merged, "words sharing one translation, kept once"))
        return [f"{self.english.name}: {what}: {words[:10]}" for words, what in found if words]


def translate(test: SeatTest, vocab: dict[str, str], *, drop_suspect: bool = True) -> Translation:
    aligned: dict[str, list[tuple[str, str]]] = {}
    missing: list[str] = []
    suspects: list[str] = []
    merged: list[str] = []
    for k in SETS:
        pairs: list[tuple[str, str]] = []
        seen: set[str] = set()
        for en in test.examples[k]:
            tr = vocab.get(en) or vocab.get(en.lower())
            if tr is None:
                missing.append(en)
                continue
            if suspect(en, tr):
                suspects.append(f"{en} → {tr}")
                if drop_suspect:
                    continue
            key = tr_lower(tr)
            if key in seen:
                merged.append(f"{en} → {tr}")
                continue
            seen.add(key)
            pairs.append((en, tr))
        if not pairs:
            raise ProbeError(f"xweat: {test.name}: no word of {k} ({test.categories[k]}) has a usable translation")
        aligned[k] = pairs
    en_test = SeatTest(test.name, test.path, dict(test.categories), {k: [e for e, _ in v] for k, v in aligned.items()},
                       test.domain)
    tr_test = SeatTest(f"{test.name}-tr", test.path, dict(test.categories),
                       {k: [t for _, t in v] for k, v in aligned.items()}, test.domain)
    return Translation(en_test, tr_test, aligned, missing, suspects, merged)


def to_json(test: SeatTest) -> dict[str, Any]:
    """A test in the SEAT file format."""
    return {k: {"category": test.categories[k], "examples": test.examples[k]} for k in SETS}


def _cos(emb: dict[str, np.ndarray], test: SeatTest) -> tuple[np.ndarray, np.ndarray, int]:
    X, Y, A, B = (np.stack([emb[e] for e in test.examples[k]]) for k in SETS)
    XY = np.concatenate([X, Y])
    return XY @ A.T, XY @ B.T, len(X)


@register_probe("xweat")
class XWeat(Probe):
    kinds = ("encoder", "masked-lm", "causal-lm", "classifier")
    metrics = METRICS
    primary_metric = "effect_size_gap"
    description = "XWEAT: WEAT effect sizes in English vs their Turkish translation (Lauscher & Glavaš 2019)"

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        files = super().data_files(data, options)
        vocab = (options or {}).get("vocab")
        return files + ([Path(vocab)] if vocab else [])

    class Options(BatchingOptions):
        data: str | Path = Field(description="an English WEAT test file (SEAT format) or a folder of them")
        vocab: str = Field(description="the path of XWEAT's vocab_en_tr.csv")
        tests: list[str] | None = Field(default=None, description="keep the named tests (a list or comma-separated)")
        drop_suspect: StrictBool = True
        pooling: Literal["mean", "cls", "pooler", "last"] = "mean"
        n_bootstrap: NonNegativeInt = 1000

        _tests = field_validator("tests", mode="before")(comma_list)

    def score(self, handle: ModelHandle, data: str | Path | None, opts: XWeat.Options, *, seed: int,
              progress: bool) -> ProbeResult:
        """Translate every English test of ``data`` with ``vocab`` and compare effect sizes."""
        assert data is not None  # Options.data is required
        pooling, n_bootstrap, drop_suspect = opts.pooling, opts.n_bootstrap, opts.drop_suspect
        table = load_vocab(opts.vocab)
        translations = [translate(t, table, drop_suspect=drop_suspect) for t in load_seat(data, opts.tests, "xweat")]
        texts = sorted({e for tr in translations for t in (tr.english, tr.turkish) for k in SETS for e in t.examples[k]})
        vectors = scoring.embed(handle, texts, pooling=pooling, normalize=True, max_batch_tokens=opts.max_batch_tokens,
                                progress=progress)
        emb = dict(zip(texts, vectors, strict=True))
        rows = []
        warnings: list[str] = []
        for tr in translations:
            warnings += tr.warnings()
            s = _test_seed(seed, tr.english.name)
            res = {lang: weat(*(np.stack([emb[e] for e in t.examples[k]]) for k in SETS), n_boot=n_bootstrap, seed=s)
                   for lang, t in (("en", tr.english), ("tr", tr.turkish))}
            (ca_en, cb_en, n_x), (ca_tr, cb_tr, _) = _cos(emb, tr.english), _cos(emb, tr.turkish)
            w = resample_weights(n_x, ca_en.shape[0] - n_x, ca_en.shape[1], cb_en.shape[1], n_bootstrap, s)
            gap = resampled_effect_sizes(ca_tr, cb_tr, n_x, w) - resampled_effect_sizes(ca_en, cb_en, n_x, w)
            gap = gap[np.isfinite(gap)]
            lo, hi = (np.quantile(gap, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2]) if gap.size
                      else (math.nan, math.nan))
            rows.append({
                "test": tr.english.name, **tr.english.categories,
                "n_words": sum(len(v) for v in tr.aligned.values()), "n_missing": len(tr.missing),
                "n_suspect": len(tr.suspects), "n_merged": len(tr.merged),
                "effect_size_en": res["en"].effect_size, "p_value_en": res["en"].p_value,
                "ci_low_en": res["en"].ci_low, "ci_high_en": res["en"].ci_high,
                "effect_size_tr": res["tr"].effect_size, "p_value_tr": res["tr"].p_value,
                "ci_low_tr": res["tr"].ci_low, "ci_high_tr": res["tr"].ci_high,
                "effect_size_gap": res["tr"].effect_size - res["en"].effect_size,
                "gap_ci_low": float(lo), "gap_ci_high": float(hi),
                "examples_tr": json.dumps({k: [f"{e} → {t}" for e, t in v] for k, v in tr.aligned.items()},
                                          ensure_ascii=False),
            })
        items = pd.DataFrame(rows)
        summary = {
            "effect_size_gap": mean_metric(METRICS["effect_size_gap"], items["effect_size_gap"].to_numpy(), seed=seed),
            **{f"mean_abs_effect_size_{lang}": mean_metric(METRICS[f"mean_abs_effect_size_{lang}"],
                                                           items[f"effect_size_{lang}"].to_numpy(), seed=seed,
                                                           test="none", transform=np.abs) for lang in ("en", "tr")},
        }
        if len(items) == 1:  # one test: the paired word bootstrap is the interval
            mv = summary["effect_size_gap"]
            mv.ci_low, mv.ci_high = items["gap_ci_low"].iloc[0], items["gap_ci_high"].iloc[0]
            mv.ci_method, mv.warning = "paired bootstrap over words (one test)", ""
            mv.p_value, mv.test = None, ""
        per = {
            "effect_size_en": lambda d: _test_value(d, "en"),
            "effect_size_tr": lambda d: _test_value(d, "tr"),
            "effect_size_gap": lambda d: MetricValue.from_info(
                METRICS["effect_size_gap"], float(d["effect_size_gap"].iloc[0]), ci_low=float(d["gap_ci_low"].iloc[0]),
                ci_high=float(d["gap_ci_high"].iloc[0]), n=int(d["n_words"].iloc[0]),
                ci_method="paired bootstrap over words"),
        }
        breakdown = group_breakdown(items, "test", per)
        info = {"vocab": str(opts.vocab), "n_tests": len(items), "pooling": pooling, "drop_suspect": drop_suspect,
                "language": "en→tr",
                "translations": {tr.english.name: to_json(tr.turkish) for tr in translations}}
        return ProbeResult("xweat", summary, items, breakdown, warnings=warnings, info=info,
                           item_effect="effect_size_gap", item_text=["test", "examples_tr"])


def _test_value(d: pd.DataFrame, lang: str) -> MetricValue:
    r = d.iloc[0]
    return MetricValue(value=float(r[f"effect_size_{lang}"]), ci_low=float(r[f"ci_low_{lang}"]),
                       ci_high=float(r[f"ci_high_{lang}"]), n=int(r["n_words"]), p_value=float(r[f"p_value_{lang}"]),
                       test="WEAT permutation test (one-sided)", ci_method="bootstrap over words")


def main(argv: list[str] | None = None) -> int:
    """Write the Turkish translation of an English WEAT test file."""
    ap = argparse.ArgumentParser(prog="python -m probes.xweat", description=main.__doc__)
    ap.add_argument("test", help="English WEAT/SEAT test file")
    ap.add_argument("--vocab", required=True, help="XWEAT vocab_en_tr.csv")
    ap.add_argument("--out", required=True, help="the Turkish test file to write")
    ap.add_argument("--keep-suspect", action="store_true", help="keep names translated as common nouns")
    args = ap.parse_args(argv)
    try:
        (test,) = load_seat(args.test)
        tr = translate(test, load_vocab(args.vocab), drop_suspect=not args.keep_suspect)
    except ProbeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for w in tr.warnings():
        print(f"warning: {w}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(to_json(tr.turkish), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
