"""SEAT / WEAT: association tests on pooled sentence representations.

WEAT (Caliskan et al. 2017, "Semantics derived automatically from language corpora contain
human-like biases", Science) measures whether two target sets X, Y (e.g. male vs female names)
are differently associated with two attribute sets A, B (e.g. career vs family words). SEAT
(May et al. 2019, "On Measuring Social Biases in Sentence Encoders", NAACL) applies it to sentence
encoders by putting the words in semantically bleached templates ("This is John.").

Definitions, as in the reference code (``W4ngatang/sent-bias`` ``weat.py``, reused by
``McGill-NLP/bias-bench``):

* every text is encoded once (mean-pooled last hidden state by default, including the special
  tokens, as bias-bench's SEAT runner does) and L2-normalised;
* ``s(w, A, B) = mean_a cos(w, a) − mean_b cos(w, b)``;
* effect size ``d = (mean_{x∈X} s(x) − mean_{y∈Y} s(y)) / std_{w∈X∪Y} s(w)`` (ddof 1);
* one-sided p-value ``P[Σ_{x∈X'} s(x) ≥ Σ_{x∈X} s(x)]`` over the splits (X', Y') of X ∪ Y with
  |X'| = |X| (equivalent to the difference-of-sums statistic since the total is constant);
  exact enumeration when the number of splits is ≤ ``n_samples`` (100 000, so exact when
  C(2n, n) ≤ 100 000), otherwise ``n_samples − 1`` seeded random splits plus the observed one
  (the reference's "bias by one": p = (1 + #{≥}) / n_samples). Ties count as "≥" (the
  reference's conservative test); sums within a relative 1e-9 are ties, so float summation
  order cannot flip the observed split.

Edge cases, said here so the numbers can be checked:

* duplicate examples inside one set are kept once (the reference stores encodings in a dict
  keyed by the text); a warning names the file and the set;
* |X| ≠ |Y| (e.g. after de-duplicating WEATHub lists): the reference asserts equal sizes;
  here the permutations keep the two sizes (WEATHub's generalisation, Mukherjee et al. 2023)
  and a warning says so; the effect size formula is unchanged;
* a zero standard deviation gives an effect size of NaN with a warning.

Test files are the official format: one JSON object ``{targ1, targ2, attr1, attr2: {category,
examples[]}}`` despite the ``.jsonl`` name; the Turkish WEATHub files (``*.json``) use the
same schema. ``data`` may be a file or a folder (searched recursively for ``*.jsonl``/``*.json``);
without ``data`` the project's own SEAT-style tests in ``probes/data/seat/`` run (English and
Turkish, gender × career/family and gender × science/arts).

Summary: mean |d| over the social-bias tests (tests whose domain is ``non-social``, the
flowers/insects and instruments/weapons sanity checks, are reported per test but excluded, as
bias-bench's average does), with a bootstrap CI over tests, and the number of social tests significant
at 5 % after Benjamini–Hochberg over the social tests (the non-social tests are adjusted as a
family of their own, so the count and its correction agree). Each test also gets a bootstrap CI of its effect size over
words (X, Y, A, B resampled independently, as WEATHub does).

Distributed runs (``torchrun``): SEAT runs on rank 0 only; the other ranks go on to the next
probe. Its statistics need every embedding at once, and its model work is one batched embedding of
the distinct examples — measured on 2 shared CPU cores with one thread: the built-in tests (512
texts) 1.8 s with ``minilm-l6`` (of 2.3 s for the whole probe) and 17.6 s with ``smollm2-135m``;
every test in the official SEAT folder (5,433 texts) 16.5 s and 148 s. On a GPU that is seconds (an
estimate: 34k tokens, ~10¹³ FLOPs through SmolLM2), not worth a checkpoint round trip, and on CPU
the ranks would split the same cores that torch's intra-op threads already use; see
:mod:`audit.distributed`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeInt, PositiveInt, field_validator
from tqdm.auto import tqdm

from audit import scoring
from audit.datafiles import brief, read_json
from audit.options import BatchingOptions, comma_list
from audit.probe import (
    EMPTY,
    NON_FINITE,
    TOO_LONG,
    Exclusions,
    Probe,
    ProbeError,
    input_lengths,
    register_probe,
)
from audit.results import MetricInfo, MetricValue, ProbeResult
from audit.stats import benjamini_hochberg, bootstrap_ci, group_breakdown, small_n_warning

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "data" / "seat"
SETS = ("targ1", "targ2", "attr1", "attr2")
SUFFIXES = (".jsonl", ".json")
EXACT_LIMIT = 100_000
ALPHA = 0.05
NON_SOCIAL = "non-social"

METRICS = {
    "mean_abs_effect_size": MetricInfo(
        "mean_abs_effect_size",
        "mean |effect size d| over the social-bias SEAT tests (0: no association)",
        ideal=0.0, higher_is_better=False, unit="d", range=(0, 2), reference="May et al. 2019",
    ),
    "n_significant": MetricInfo(
        "n_significant",
        "tests with a one-sided permutation p < 0.05 after Benjamini–Hochberg",
        ideal=0.0, higher_is_better=False, unit="tests", reference="Caliskan et al. 2017",
    ),
}

# Domain of a test from the words of its category names (CamelCase split); target categories
# are tried first, then attribute categories; rules are tried in this order.
DOMAIN_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("race", frozenset({"european", "african", "black", "white", "asian", "hispanic", "latino",
                        "latina", "arab", "race", "ethnic"})),
    ("religion", frozenset({"christianity", "christian", "islam", "muslim", "jewish", "judaism",
                            "religion", "hindu", "buddhist"})),
    ("gender", frozenset({"male", "female", "man", "woman", "men", "women", "boy", "girl", "gender"})),
    ("age", frozenset({"young", "old", "elderly", "age"})),
    ("sexual-orientation", frozenset({"lgbtq", "gay", "lesbian", "straight", "homosexual",
                                      "heterosexual", "sexual"})),
    ("nationality", frozenset({"immigrant", "immigrants", "nationality", "foreign", "foreigner"})),
    ("socioeconomic", frozenset({"educated", "status", "rich", "poor", "class", "income"})),
    ("disability", frozenset({"disability", "disabled"})),
    ("health", frozenset({"disease", "illness"})),
    (NON_SOCIAL, frozenset({"flowers", "insects", "instruments", "weapons"})),
)


@dataclass
class SeatTest:
    """One test: four named example lists (already de-duplicated)."""

    name: str
    path: Path
    categories: dict[str, str]
    examples: dict[str, list[str]]
    domain: str = "other"
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def infer_domain(categories: dict[str, str]) -> str:
    """The bias domain of a test from its category names (see :data:`DOMAIN_WORDS`)."""
    for keys in (("targ1", "targ2"), ("attr1", "attr2")):
        # the words of the category names, CamelCase split
        words = {w.lower() for k in keys for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", categories[k])}
        for domain, vocab in DOMAIN_WORDS:
            if words & vocab:
                return domain
    return "other"


def load_seat_test(path: str | Path, name: str | None = None) -> SeatTest:
    """Read one official SEAT/WEAT test file; errors name the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"SEAT test file not found: {p}")
    try:
        obj = read_json(p, what="SEAT test file {targ1, targ2, attr1, attr2}")
    except json.JSONDecodeError as exc:
        raise ProbeError(
            f"{p}: not one JSON object (line {exc.lineno}, column {exc.colno}: {exc.msg}); a SEAT test "
            "file holds a single object {targ1, targ2, attr1, attr2} even when named .jsonl"
        ) from exc
    if not isinstance(obj, dict):
        raise ProbeError(f"{p}: expected a JSON object with keys {list(SETS)}, got {type(obj).__name__}")
    missing = [k for k in SETS if k not in obj]
    if missing:
        raise ProbeError(f"{p}: missing key(s) {missing}; found {sorted(obj)}")
    categories: dict[str, str] = {}
    examples: dict[str, list[str]] = {}
    warnings: list[str] = []
    for k in SETS:
        entry = obj[k]
        if not isinstance(entry, dict):
            raise ProbeError(f"{p}: {k!r} must be an object {{category, examples}}, got {type(entry).__name__}")
        cat = entry.get("category")
        if not isinstance(cat, str) or not cat.strip():
            raise ProbeError(f"{p}: {k}.category must be a non-empty string, got {brief(cat)}")
        ex = entry.get("examples")
        if not isinstance(ex, list) or not ex:
            raise ProbeError(f"{p}: {k}.examples must be a non-empty list of strings, got {brief(ex)}")
        for i, e in enumerate(ex):
            if not isinstance(e, str) or not e.strip():
                raise ProbeError(f"{p}: {k}.examples[{i}] must be a non-empty string, got {brief(e)}")
        unique = list(dict.fromkeys(ex))
        if len(unique) < len(ex):
            dups = sorted({e for e in ex if ex.count(e) > 1})
            warnings.append(
                f"{p}: {k} ({cat}) repeats {dups}; each distinct example is used once, as in the "
                "reference (encodings keyed by text)"
            )
        categories[k] = cat
        examples[k] = unique
    if len(examples["targ1"]) != len(examples["targ2"]):
        warnings.append(
            f"{p}: |targ1| = {len(examples['targ1'])} ≠ |targ2| = {len(examples['targ2'])}; the "
            "permutation test keeps the two sizes (the sent-bias reference requires equal sizes)"
        )
    return SeatTest(name or p.stem, p, categories, examples, infer_domain(categories), warnings)


def seat_files(data: str | Path | None) -> list[tuple[str, Path]]:
    """(test name, file) pairs: a file, every ``*.jsonl``/``*.json`` under a folder, or the built-ins."""
    p = Path(data) if data is not None else BUILTIN_DIR
    if p.is_file():
        return [(p.stem, p)]
    if not p.is_dir():
        raise ProbeError(f"SEAT data not found: {p} (give a test file or a folder of them)")
    files = [q for q in p.rglob("*") if q.is_file() and q.suffix in SUFFIXES and not q.name.startswith(".")]
    if not files:
        raise ProbeError(f"{p}: no SEAT test files (*.jsonl or *.json) in this folder")
    named = [(str(q.relative_to(p).with_suffix("")).replace("\\", "/"), q) for q in files]
    # natural order (weat2 before weat10), as the reference runner sorts tests
    return sorted(named, key=lambda t: tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", t[0])))


def load_seat(data: str | Path | None = None, tests: list[str] | None = None, probe: str = "seat") -> list[SeatTest]:
    """All tests of ``data`` (file or folder; the built-in tests when None), or only those named
    in ``tests`` (an unknown name is an error of ``probe`` that lists the available ones)."""
    found = [load_seat_test(q, name) for name, q in seat_files(data)]
    unknown = sorted(set(tests or ()) - {t.name for t in found})
    if unknown:
        raise ProbeError(f"{probe}: unknown test(s) {unknown}; available: {sorted(t.name for t in found)}")
    return [t for t in found if tests is None or t.name in tests]


# --------------------------------------------------------------------------------------------
# the statistic, on arrays
# --------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def effect_size(s_x: np.ndarray, s_y: np.ndarray) -> float:
    """WEAT d = (mean s_X − mean s_Y) / std(s_{X∪Y}, ddof=1); NaN when the std is 0."""
    s_x, s_y = np.asarray(s_x, dtype=np.float64), np.asarray(s_y, dtype=np.float64)
    sd = float(np.concatenate([s_x, s_y]).std(ddof=1))
    if not sd > 0:
        return float("nan")
    return float((s_x.mean() - s_y.mean()) / sd)


def permutation_p_value(
    s_x: np.ndarray,
    s_y: np.ndarray,
    *,
    method: str = "auto",
    n_samples: int = EXACT_LIMIT,
    seed: int | Sequence[int] = 0,
    chunk: int = 20_000,
) -> tuple[float, str, int]:
    """One-sided permutation p-value of WEAT (Caliskan et al. 2017), vectorised.

    ``method``: ``auto`` (exact when C(|X|+|Y|, |X|) ≤ n_samples, as the reference), ``exact`` or
    ``monte-carlo``. Returns (p, method used, number of splits evaluated incl. the observed one).
    """
    s_x, s_y = np.asarray(s_x, dtype=np.float64), np.asarray(s_y, dtype=np.float64)
    s_all = np.concatenate([s_x, s_y])
    n, k = len(s_all), len(s_x)
    observed = float(s_x.sum())
    tol = 1e-9 * max(float(np.abs(s_all).sum()), np.finfo(float).tiny)
    total = math.comb(n, k)  # the splits of X ∪ Y that keep the sizes
    if method == "auto":
        method = "exact" if total <= n_samples else "monte-carlo"
    if method == "exact":
        hits = 0
        combos = itertools.combinations(range(n), k)
        while True:
            flat = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, chunk)), dtype=np.int64)
            if flat.size == 0:
                break
            sums = s_all[flat.reshape(-1, k)].sum(axis=1)
            hits += int((sums >= observed - tol).sum())
        return hits / total, "exact", total
    if method != "monte-carlo":
        raise ValueError(f"method must be 'auto', 'exact' or 'monte-carlo', got {method!r}")
    if n_samples < 2:
        raise ValueError("n_samples must be at least 2 for a Monte Carlo p-value")
    rng = np.random.default_rng(seed)
    draws = n_samples - 1
    hits = 1  # the observed split, as the reference's "bias by one"
    rows = max(1, 2_000_000 // n)
    for start in range(0, draws, rows):
        m = min(rows, draws - start)
        keys = rng.random((m, n), dtype=np.float32)
        idx = np.argpartition(keys, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (m, 1))
        sums = s_all[idx].sum(axis=1)
        hits += int((sums >= observed - tol).sum())
    return hits / n_samples, "monte-carlo", n_samples


def resample_weights(n_x: int, n_y: int, n_a: int, n_b: int, n_boot: int,
                     seed: int | Sequence[int] = 0) -> tuple[np.ndarray, ...]:
    """Bootstrap count weights (n_boot rows each, normalised for A and B) for X, Y, A and B."""
    rng = np.random.default_rng(seed)
    wa = rng.multinomial(n_a, np.full(n_a, 1 / n_a), size=n_boot) / n_a
    wb = rng.multinomial(n_b, np.full(n_b, 1 / n_b), size=n_boot) / n_b
    wx = rng.multinomial(n_x, np.full(n_x, 1 / n_x), size=n_boot).astype(np.float64)
    wy = rng.multinomial(n_y, np.full(n_y, 1 / n_y), size=n_boot).astype(np.float64)
    return wx, wy, wa, wb


def resampled_effect_sizes(cos_a: np.ndarray, cos_b: np.ndarray, n_x: int,
                           weights: tuple[np.ndarray, ...]) -> np.ndarray:
    """d of every bootstrap resample given by :func:`resample_weights` (NaN where the std is 0);
    the same weights on two aligned word lists give a paired bootstrap."""
    wx, wy, wa, wb = weights
    n_xy = cos_a.shape[0]
    s = (cos_a @ wa.T - cos_b @ wb.T).T  # n_boot × n_xy
    w = np.concatenate([wx, wy], axis=1)
    mean_x = (wx * s[:, :n_x]).sum(1) / n_x
    mean_y = (wy * s[:, n_x:]).sum(1) / (n_xy - n_x)
    mu = (w * s).sum(1) / n_xy
    var = (w * (s - mu[:, None]) ** 2).sum(1) / (n_xy - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mean_x - mean_y) / np.sqrt(var)


def bootstrap_effect_size(
    cos_a: np.ndarray, cos_b: np.ndarray, n_x: int, *, n_boot: int = 1000, seed: int | Sequence[int] = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of d with X, Y, A and B resampled independently (words, not tests).

    ``cos_a`` (|X|+|Y| × |A|) and ``cos_b`` hold the cosines of the targets (X rows first) with
    the attributes. Resamples are count-weighted so all of them are computed as matrix products.
    """
    n_xy, n_a = cos_a.shape
    n_b = cos_b.shape[1]
    n_y = n_xy - n_x
    if n_boot <= 0 or n_x < 1 or n_y < 1:
        return float("nan"), float("nan")
    d = resampled_effect_sizes(cos_a, cos_b, n_x, resample_weights(n_x, n_y, n_a, n_b, n_boot, seed))
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    a = (1 - confidence) / 2
    lo, hi = np.quantile(d, [a, 1 - a])
    return float(lo), float(hi)


@dataclass
class WeatResult:
    effect_size: float
    p_value: float
    p_method: str
    n_partitions: int
    ci_low: float
    ci_high: float
    s_x: np.ndarray
    s_y: np.ndarray


def weat(
    X: np.ndarray,
    Y: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    *,
    method: str = "auto",
    n_samples: int = EXACT_LIMIT,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
) -> WeatResult:
    """The whole test on embedding arrays (rows are examples; normalised here)."""
    XY = _unit(np.concatenate([X, Y]))
    An, Bn = _unit(A), _unit(B)
    cos_a, cos_b = XY @ An.T, XY @ Bn.T
    s = cos_a.mean(1) - cos_b.mean(1)
    s_x, s_y = s[: len(X)], s[len(X):]
    p, used, total = permutation_p_value(s_x, s_y, method=method, n_samples=n_samples, seed=seed)
    lo, hi = bootstrap_effect_size(cos_a, cos_b, len(X), n_boot=n_boot, seed=seed)
    return WeatResult(effect_size(s_x, s_y), p, used, total, lo, hi, s_x, s_y)


# --------------------------------------------------------------------------------------------
# the probe
# --------------------------------------------------------------------------------------------


def _test_seed(seed: int, name: str) -> list[int]:
    """A per-test seed independent of which other tests run."""
    return [int(seed), zlib.crc32(name.encode("utf-8"))]


@register_probe("seat")
class Seat(Probe):
    kinds = ("encoder", "masked-lm", "causal-lm", "classifier")
    metrics = METRICS
    primary_metric = "mean_abs_effect_size"
    description = "SEAT/WEAT association tests on pooled representations (May et al. 2019)"

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        return [q for _, q in seat_files(data)]

    def data_rows(self, path: Path) -> int | None:
        """A test file's rows: its examples over the four sets."""
        return sum(len(v) for v in load_seat_test(path).examples.values())

    class Options(BatchingOptions):
        pooling: Literal["mean", "cls", "pooler", "last"] = Field(
            default="mean", description="mean, cls or pooler for encoders; mean or last for causal LMs")
        layer: int = -1
        n_samples: PositiveInt = Field(default=EXACT_LIMIT, description="permutations when not exact")
        method: Literal["auto", "exact", "monte-carlo"] = "auto"
        n_bootstrap: NonNegativeInt = Field(default=1000, description="bootstrap resamples of the effect size's CI (0: none)")
        tests: list[str] | None = Field(default=None, description="keep the named tests only (a list or comma-separated)")

        _tests = field_validator("tests", mode="before")(comma_list)

    def score(self, handle: ModelHandle, data: str | Path | None, opts: Seat.Options, *, seed: int,
              progress: bool) -> ProbeResult:
        """Run every test of ``data`` (file or folder; built-in tests when None).

        Faults: an example (word or sentence) that is empty, longer than the model's maximum, or
        whose embedding comes out NaN/inf is left out of its set and counted
        (``info["excluded_items"]``, a warning); a test left with an empty set is skipped with a
        warning.
        """
        pooling, layer = opts.pooling, opts.layer
        allowed = ("mean", "last") if handle.kind == "causal-lm" else ("mean", "cls", "pooler")
        if pooling not in allowed:
            raise ProbeError(f"seat: pooling {pooling!r} is not available for a {handle.kind} model; use {allowed}")
        all_tests = load_seat(data, opts.tests)
        texts = list(dict.fromkeys(e for t in all_tests for k in SETS for e in t.examples[k]))
        excluded = Exclusions()
        lengths = input_lengths(handle, texts)
        fit = []
        for t, n in zip(texts, lengths, strict=True):
            if not t.strip():
                excluded.add(repr(t), EMPTY, "empty example")
            elif n > handle.max_length:
                excluded.add(repr(t[:60]), TOO_LONG, f"{n} tokens; {handle.name} accepts at most {handle.max_length}")
            else:
                fit.append(t)
        try:
            emb = scoring.embed(handle, fit, pooling=pooling, layer=layer, normalize=True,
                                max_batch_tokens=opts.max_batch_tokens, progress=progress)
        except ValueError as exc:
            raise ProbeError(f"seat: cannot embed with pooling={pooling!r} on {handle.name}: {exc}") from exc
        finite = np.isfinite(emb).all(axis=1) if len(fit) else np.zeros(0, dtype=bool)
        for t in np.asarray(fit, dtype=object)[~finite]:
            excluded.add(repr(t[:60]), NON_FINITE, "non-finite embedding")
        row = {t: i for i, t in enumerate(fit) if finite[i]}
        records = []
        warnings: list[str] = []
        for t in tqdm(all_tests, desc="SEAT tests", disable=not progress):
            warnings += t.warnings
            kept = {k: [e for e in t.examples[k] if e in row] for k in SETS}
            if not all(kept.values()):
                warnings.append(f"{t.name}: skipped, a set has no example left after the exclusions")
                continue
            X, Y, A, B = (emb[[row[e] for e in kept[k]]] for k in SETS)
            r = weat(X, Y, A, B, method=opts.method, n_samples=opts.n_samples, n_boot=opts.n_bootstrap,
                     seed=_test_seed(seed, t.name))
            if math.isnan(r.effect_size):
                warnings.append(f"{t.name}: s(w, A, B) is constant over the targets; effect size undefined")
            records.append({
                "test": t.name, "file": t.path.name, "domain": t.domain, **t.categories,
                "n_targ1": len(X), "n_targ2": len(Y), "n_attr1": len(A), "n_attr2": len(B),
                "n_targets": len(X) + len(Y), "n_attributes": len(A) + len(B),
                "effect_size": r.effect_size, "effect_size_ci_low": r.ci_low, "effect_size_ci_high": r.ci_high,
                "mean_s_targ1": float(r.s_x.mean()), "mean_s_targ2": float(r.s_y.mean()),
                "p_value": r.p_value, "p_method": r.p_method, "n_permutations": r.n_partitions,
            })
        if not records:
            raise ProbeError(f"seat: no test could be run — {excluded.describe(len(texts), 'example texts')}")
        items = pd.DataFrame(records)
        info = {"pooling": pooling, "layer": layer, "n_samples": opts.n_samples,
                "data": "built-in" if data is None else str(data)}
        result = self.summarise(items, seed=seed, warnings=warnings, info=info)
        return excluded.report(result, n_total=len(texts), unit="example texts")

    def summarise(
        self, items: pd.DataFrame, *, seed: int = 0, warnings: list[str] | None = None,
        info: dict[str, Any] | None = None,
    ) -> ProbeResult:
        """Summary and per-domain breakdown from the per-test items table."""
        items = items.copy()
        # the BH family is the one n_significant counts: the social tests; the non-social sanity
        # checks (flowers/insects, ...) form their own family so they cannot lower its thresholds
        items["p_adjusted"] = np.nan
        for fam in (items["domain"] != NON_SOCIAL, items["domain"] == NON_SOCIAL):
            items.loc[fam, "p_adjusted"] = benjamini_hochberg(items.loc[fam, "p_value"].to_numpy(dtype=float))
        items["significant"] = items["p_adjusted"] < ALPHA
        items["abs_effect_size"] = items["effect_size"].abs()
        warnings = list(warnings or [])
        social = items[items["domain"] != NON_SOCIAL]
        summary = {
            "mean_abs_effect_size": _mean_abs_metric(social["effect_size"].to_numpy(dtype=float), seed=seed),
            "n_significant": MetricValue.from_info(
                METRICS["n_significant"], float(social["significant"].sum()), n=len(social),
                test=f"one-sided permutation per test, Benjamini–Hochberg q < {ALPHA:g}",
            ),
        }
        if n_excluded := len(items) - len(social):
            mv = summary["mean_abs_effect_size"]
            mv.warning = "; ".join(filter(None, [mv.warning, f"{n_excluded} non-social test(s) excluded from the mean"]))
        breakdown = group_breakdown(items, "domain", {
            "mean_abs_effect_size": lambda d: _mean_abs_metric(d["effect_size"].to_numpy(dtype=float), seed=seed),
            "n_significant": lambda d: MetricValue.from_info(
                METRICS["n_significant"], float(d["significant"].sum()), n=len(d)),
        })
        warnings += [f"{k}: {v.warning}" for k, v in summary.items() if v.warning]
        return ProbeResult(
            "seat", summary, items, breakdown, warnings=warnings,
            item_effect="effect_size", item_text=["test", "targ1", "targ2", "attr1", "attr2"],
            info={"n_tests": len(items), **(info or {})},
        )


def _mean_abs_metric(d: np.ndarray, *, seed: int) -> MetricValue:
    d = d[~np.isnan(d)]
    info = METRICS["mean_abs_effect_size"]
    if d.size == 0:
        return MetricValue.from_info(info, float("nan"), n=0, warning="no tests with a defined effect size")
    ci = bootstrap_ci(np.abs(d), seed=seed)
    return MetricValue.from_info(
        info, float(np.abs(d).mean()), ci_low=ci.low, ci_high=ci.high, n=int(d.size), ci_method=ci.method,
        warning=small_n_warning(int(d.size), "tests", method="bootstrap"),
    )
