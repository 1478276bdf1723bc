"""Counterfactual identity-term swaps: does the model's output change when only the group named in
a text changes?

Counterfactual data substitution follows Lu et al. 2019 ("Gender Bias in Neural Natural Language
Processing") and Zhao et al. 2018 (gender-swapped data); for classifiers the measures are the
counterfactual token fairness gap of Garg et al. 2019 ("Counterfactual Fairness in Text
Classification through Robustness", AIES) and the prediction flip rate; for language models the
log-likelihood difference of the original and the swapped text, and optionally the sentiment
shift of generated continuations (BOLD-style, Dhamala et al. 2021, VADER of Hutto & Gilbert 2014).

Swapping (:mod:`probes.swaps`): every identity term of a text (names, pronouns, group nouns, in
English and Turkish, with Turkish suffixes) is replaced by its counterpart at once, keeping its
case; a text without any swappable term is kept in the items table with ``swapped = False``,
counted in ``no_term_rate`` and listed in ``info["no_term_ids"]``, never dropped silently.

Direction. Each row of a swap list names two groups (``group_a``, ``group_b``, e.g. male/female,
white/black, christian/muslim). A text whose swapped terms are mostly group-a terms is an
"a-version" and its counterfactual a "b-version" (and vice versa). Signed metrics are oriented
``b-version − a-version`` (e.g. female − male), so a consistent preference shows up as a non-zero
mean; texts that mention both groups equally have no direction and only count in |Δ| metrics.

Measures, per model kind:

* classifier: ``flip_rate`` (% of texts whose arg-max label changes), ``mean_abs_delta_p``
  (|p(ŷ | x) − p(ŷ | x')| for the original prediction ŷ) and, for a binary model or a given
  ``positive_class``, ``mean_delta_p`` (oriented change of the positive-class probability);
* causal LM: ``mean_delta_ll`` / ``mean_abs_delta_ll`` (Σ log P(tᵢ | t<ᵢ), BOS prepended) and the
  same over the **unchanged tokens only** (``…_context``: tokens that overlap no swapped term, so a
  rare name's own improbability does not count — the counterpart of CrowS-Pairs' shared-token
  score, Nangia et al. 2020); with ``generate: true`` also ``sentiment_gap`` / ``mean_abs_sentiment_
  shift``: VADER compound of continuations (``num_samples`` per text, seeded per prompt by
  :func:`audit.generation.generate`; decoding settings in ``info["generation"]``). VADER is an
  English lexicon: Turkish continuations are not scored (NaN, with a warning);
* masked LM: the same log-likelihood metrics with the pseudo-log-likelihood (Salazar et al. 2020);
* encoder (sentence embeddings): ``mean_embedding_shift``, 1 − cos between the pooled embeddings of
  the text and its counterfactual (a counterfactual-invariance measure; 0 when the encoder ignores
  the group).

Signed metrics carry a Wilcoxon signed-rank test against 0; every mean a bootstrap CI over texts;
breakdowns by swap category and language (BH-adjusted).

Input (``data=``): a text file (one text per line; blank lines skipped; line numbers are the ids)
or a CSV with a ``text`` column (optional ``id``, ``language``, ``category``). Without a
``language`` column the ``language`` option says which swap list applies (``en`` or ``tr``).
Default: the project's own neutral sentences ``texts_en.csv`` / ``texts_tr.csv`` (two control
sentences per language have no identity term on purpose). Swap lists (``swaps=`` a CSV file or a
folder of them): columns ``language, category, type, group_a, term_a, group_b, term_b`` and the
optional ``direction`` (both | a->b | b->a), ``when`` (noun | other: condition on the next word),
``stem_a``/``stem_b`` (Turkish stem before a vowel-initial suffix). Errors name the file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, NonNegativeFloat, PositiveInt, StrictBool

from audit import scoring
from audit.datafiles import read_table_csv, read_text_file, text_lines
from audit.generation import NON_FINITE_COLUMN, GenerationSettings, generate, settings_of
from audit.options import BatchingOptions, MaxItemsOptions, SamplingOptions
from audit.probe import ItemProbe, ProbeError, register_probe, too_long_rows
from audit.results import MetricInfo, ProbeResult
from audit.stats import group_breakdown, mean_metric
from probes.bold import VaderScorer, classifier_probs, untested_rate
from probes.swaps import load_swap_rules, make_counterfactuals, swap_files

if TYPE_CHECKING:
    from audit.models import ModelHandle


DATA_DIR = Path(__file__).parent / "data" / "counterfactual"
DEFAULT_TEXTS = (DATA_DIR / "texts_en.csv", DATA_DIR / "texts_tr.csv")


def load_texts(data: str | Path | None, language: str) -> pd.DataFrame:
    """Columns id, line, language, text_category, text, source. Errors name the file and line."""
    if data is None:
        df = pd.concat([load_texts(p, "both") for p in DEFAULT_TEXTS], ignore_index=True)
        return df if language == "both" else df[df["language"] == language].reset_index(drop=True)
    p = Path(data)
    if not p.is_file():
        raise ProbeError(f"counterfactual text file not found: {p}")
    if p.suffix.lower() == ".csv":
        df = read_table_csv(p, what="counterfactual texts CSV")
        if "text" not in df.columns:
            raise ProbeError(f"{p}: no 'text' column; found {list(df.columns)}")
        lines = df.index.tolist()
        df = df.reset_index(drop=True)
        for line, t in zip(lines, df["text"], strict=True):
            if not str(t).strip():
                raise ProbeError(f"{p}: line {line}: empty 'text'")
        if "id" in df.columns:
            first: dict[str, int] = {}
            for line, i in zip(lines, df["id"].str.strip(), strict=True):
                if i in first:
                    raise ProbeError(f"{p}: line {line}: id {i!r} is already used on line {first[i]}; "
                                     "give each text its own id")
                first[i] = line
        out = pd.DataFrame({
            "id": df["id"].astype(str) if "id" in df.columns else [str(x) for x in lines],
            "line": lines, "text": df["text"].astype(str).str.strip(),
            "text_category": df["category"].astype(str) if "category" in df.columns else "",
        })
        if "language" in df.columns:
            langs = df["language"].astype(str).str.strip()
            out["language"] = langs.to_numpy()
            if language != "both":
                out = out[out["language"] == language]
        elif language == "both":
            raise ProbeError(f"{p}: no 'language' column; set the option language: en or tr")
        else:
            out["language"] = language
    else:
        raw = text_lines(read_text_file(p, what="counterfactual text file"))
        if language == "both":
            raise ProbeError(f"{p}: a plain text file has no language column; set the option language: en or tr")
        rows = [(i, s.strip()) for i, s in raw if s.strip()]
        if not rows:
            raise ProbeError(f"{p}: no non-blank lines")
        out = pd.DataFrame({"id": [str(i) for i, _ in rows], "line": [i for i, _ in rows],
                            "text": [s for _, s in rows], "text_category": "", "language": language})
    out["source"] = str(p)
    if len(out) == 0:
        raise ProbeError(f"{p}: no texts in language {language!r}")
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def _overlaps(off: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    a, b = off
    return any(a < e and b > s for s, e in spans)


def lm_scores(
    handle: ModelHandle,
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    *,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log-likelihood, log-likelihood of the tokens outside ``spans``, scored tokens) per text.

    Causal LMs: Σ log P(tᵢ | t<ᵢ) with the prefix token prepended (:mod:`audit.scoring`); masked
    LMs: the pseudo-log-likelihood, every non-special token masked in turn."""
    tok = handle.tokenizer
    if not getattr(tok, "is_fast", False):
        raise ProbeError(f"counterfactual needs a fast tokenizer (character offsets); {handle.name} has a slow one")
    total = np.zeros(len(texts))
    context = np.zeros(len(texts))
    n_tok = np.zeros(len(texts), dtype=np.int64)
    if not texts:  # a chunk of texts without a swappable term
        return total, context, n_tok
    if handle.kind == "causal-lm":
        enc = tok(list(texts), add_special_tokens=False, return_offsets_mapping=True)
        pre = scoring.prefix_token_id(handle)
        seqs = [([pre] if pre is not None else []) + list(ids) for ids in enc["input_ids"]]
        lps = scoring.causal_logprobs(handle, seqs, max_batch_tokens=max_batch_tokens, progress=progress)
        shift = 0 if pre is not None else 1  # without a prefix token the first token is unscored
        for i, (lp, offs) in enumerate(zip(lps, enc["offset_mapping"], strict=True)):
            keep = [not _overlaps(offs[j + shift], spans[i]) for j in range(len(lp))]
            total[i], context[i], n_tok[i] = lp.sum(), lp[np.asarray(keep, dtype=bool)].sum(), len(lp)
        return total, context, n_tok
    enc = tok(list(texts), add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    positions = [[j for j, m in enumerate(mask) if not m] for mask in enc["special_tokens_mask"]]
    lps = scoring.pseudo_log_likelihood(
        handle, enc["input_ids"], positions, max_batch_tokens=max_batch_tokens, progress=progress
    )
    for i, (lp, pos, offs) in enumerate(zip(lps, positions, enc["offset_mapping"], strict=True)):
        outside = np.asarray([not _overlaps(offs[j], spans[i]) for j in pos], dtype=bool)
        total[i], context[i], n_tok[i] = lp.sum(), lp[outside].sum() if len(lp) else 0.0, len(lp)
    return total, context, n_tok


# --------------------------------------------------------------------------------------------
# the probe
# --------------------------------------------------------------------------------------------

_ORIENT = "oriented b-version − a-version (e.g. female − male; the groups are each swap row's group_b and group_a)"

METRICS = {
    "no_term_rate": MetricInfo(
        "no_term_rate", "% of texts with no swappable identity term (kept, not scored)", ideal=0.0,
        higher_is_better=False, unit="%", range=(0, 100)),
    "flip_rate": MetricInfo(
        "flip_rate", "% of texts whose predicted label changes when the identity terms are swapped",
        ideal=0.0, higher_is_better=False, unit="%", range=(0, 100), reference="Garg et al. 2019"),
    "mean_abs_delta_p": MetricInfo(
        "mean_abs_delta_p", "mean |p(ŷ|x) − p(ŷ|x')| for the original prediction ŷ (counterfactual token fairness gap)",
        ideal=0.0, higher_is_better=False, range=(0, 1), reference="Garg et al. 2019"),
    "mean_delta_p": MetricInfo(
        "mean_delta_p", f"mean change of the positive-class probability, {_ORIENT}", ideal=0.0,
        higher_is_better=None, range=(-1, 1)),
    "mean_delta_ll": MetricInfo(
        "mean_delta_ll", f"mean log-likelihood difference of the whole text in nats, {_ORIENT}", ideal=0.0,
        higher_is_better=None, unit="nats"),
    "mean_abs_delta_ll": MetricInfo(
        "mean_abs_delta_ll", "mean |log-likelihood(swapped) − log-likelihood(original)| in nats", ideal=0.0,
        higher_is_better=False, unit="nats"),
    "mean_delta_ll_context": MetricInfo(
        "mean_delta_ll_context", f"mean log-likelihood difference of the unchanged tokens only, {_ORIENT}",
        ideal=0.0, higher_is_better=None, unit="nats", reference="Nangia et al. 2020 (shared-token scoring)"),
    "mean_abs_delta_ll_context": MetricInfo(
        "mean_abs_delta_ll_context", "mean |Δ log-likelihood| of the unchanged tokens in nats", ideal=0.0,
        higher_is_better=False, unit="nats"),
    "sentiment_gap": MetricInfo(
        "sentiment_gap", f"mean VADER compound of generated continuations, {_ORIENT}", ideal=0.0,
        higher_is_better=None, range=(-2, 2), reference="Dhamala et al. 2021; Hutto & Gilbert 2014"),
    "mean_abs_sentiment_shift": MetricInfo(
        "mean_abs_sentiment_shift", "mean |VADER compound(swapped) − VADER compound(original)| of continuations",
        ideal=0.0, higher_is_better=False, range=(0, 2)),
    "mean_embedding_shift": MetricInfo(
        "mean_embedding_shift", "mean 1 − cos(embedding(x), embedding(x')) of the pooled sentence embeddings",
        ideal=0.0, higher_is_better=False, range=(0, 2)),
}

PRIMARY = {"classifier": "flip_rate", "causal-lm": "mean_delta_ll_context", "masked-lm": "mean_delta_ll_context",
           "encoder": "mean_embedding_shift"}


@register_probe("counterfactual")
class Counterfactual(ItemProbe):
    kinds = ("classifier", "causal-lm", "masked-lm", "encoder")
    metrics = METRICS
    primary_metric = "mean_delta_ll_context"
    description = "Counterfactual identity-term swaps (names, pronouns, group nouns; en + tr)"
    needs_mask_token = True
    #: the scores that must be finite for a swapped text to count (a model kind fills only its
    #: own: classifier p_*, encoder embedding_shift, language models ll_*); texts without a
    #: swappable term are kept unscored (``swapped`` False)
    score_columns = ("p_original", "p_swapped", "embedding_shift", "ll_original", "ll_swapped",
                     "ll_context_original", "ll_context_swapped")
    scored_column = "swapped"
    item_id = "id"
    item_unit = "texts"
    #: a text is two model inputs (2 · num_samples prompts when generating): half the default chunk
    chunk_size = 256

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        """The texts and the swap lists actually used (the ``swaps`` option, else the built-ins)."""
        return [*(DEFAULT_TEXTS if data is None else [Path(data)]), *swap_files((options or {}).get("swaps"))]

    class Options(BatchingOptions, MaxItemsOptions, SamplingOptions):
        """``language``: en, tr or both; ``swaps``: a swap-list CSV or folder (default: the built-in
        lists); ``categories``: swap only these categories (e.g. ``[gender]``); ``max_items``: the
        first N texts; ``positive_class``: label index or name for ``mean_delta_p``; ``pooling``:
        encoder pooling; ``generate`` (causal LMs): also generate ``num_samples`` continuations per
        text (sampling seeded per prompt, :func:`audit.generation.generate`) and score their VADER
        sentiment."""

        language: Literal["en", "tr", "both"] = "both"
        swaps: str | None = None
        categories: list[str] | None = None
        positive_class: int | str | None = None
        pooling: Literal["mean", "cls", "pooler", "last"] = "mean"
        generate: StrictBool = False
        do_sample: StrictBool = True
        num_samples: PositiveInt = 3
        temperature: NonNegativeFloat = 0.7
        top_p: float = Field(default=0.9, gt=0, le=1)

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        rules = load_swap_rules(opts["swaps"])
        categories = opts["categories"]
        if categories is not None:
            known = {r.category for r in rules}
            bad = sorted(set(categories) - known)
            if bad:
                raise ProbeError(f"counterfactual: unknown swap categor(y/ies) {bad}; have {sorted(known)}")
        texts = load_texts(data, opts["language"])
        if opts["max_items"] is not None:
            texts = texts.iloc[: opts["max_items"]].reset_index(drop=True)
        return make_counterfactuals(texts, rules, categories)

    def prepare(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        """The options with ``positive_class`` resolved to an output index."""
        o = dict(opts)
        if o["generate"] and handle.kind != "causal-lm":
            raise ProbeError(f"counterfactual: generate needs a causal LM; {handle.name} is a {handle.kind} model")
        if handle.kind == "classifier":
            o["positive_class"] = self._positive_class(handle, o["positive_class"])
        return o

    def too_long(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[int, str]:
        gen = opts["generate"]
        return too_long_rows(handle, [items["text"], items["swapped_text"]], causal=handle.kind == "causal-lm",
                             extra=opts["max_new_tokens"] if gen else 0, scored=items["swapped"].to_numpy(bool),
                             unit="tokens with the new tokens" if gen else "tokens")

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        """Both versions of every swapped text scored; texts without a term get NaN scores."""
        items = items.copy()
        sw = items["swapped"].to_numpy(bool)
        orig = items.loc[sw, "text"].tolist()
        new = items.loc[sw, "swapped_text"].tolist()
        direction = items["direction"].to_numpy(float)
        oriented = np.where(direction != 0, direction, np.nan)
        mbt = opts["max_batch_tokens"]

        def put(col: str, vals: np.ndarray) -> None:
            full = np.full(len(items), np.nan)
            full[sw] = vals
            items[col] = full

        kind = handle.kind
        if kind == "classifier":
            p_o = classifier_probs(handle, orig, max_batch_tokens=mbt, progress=progress)
            p_s = classifier_probs(handle, new, max_batch_tokens=mbt, progress=progress)
            y_o, y_s = p_o.argmax(1), p_s.argmax(1)
            put("pred_original", y_o)
            put("pred_swapped", y_s)
            put("flip", (y_o != y_s).astype(float))
            rows = np.arange(len(y_o))
            put("p_original", p_o[rows, y_o])
            put("p_swapped", p_s[rows, y_o])
            put("abs_delta_p", np.abs(p_o[rows, y_o] - p_s[rows, y_o]))
            pos = opts["positive_class"]
            if pos is not None:
                put("delta_p_positive", p_s[:, pos] - p_o[:, pos])
                items["delta_p_oriented"] = items["delta_p_positive"] * oriented
        elif kind in ("causal-lm", "masked-lm"):
            t_o, c_o, n_o = lm_scores(handle, orig, items.loc[sw, "spans"].tolist(), max_batch_tokens=mbt,
                                      progress=progress)
            t_s, c_s, n_s = lm_scores(handle, new, items.loc[sw, "new_spans"].tolist(), max_batch_tokens=mbt,
                                      progress=progress)
            put("ll_original", t_o)
            put("ll_swapped", t_s)
            put("ll_context_original", c_o)
            put("ll_context_swapped", c_s)
            put("n_tokens_original", n_o)
            put("n_tokens_swapped", n_s)
            items["delta_ll"] = items["ll_swapped"] - items["ll_original"]
            items["delta_ll_context"] = items["ll_context_swapped"] - items["ll_context_original"]
            items["delta_ll_oriented"] = items["delta_ll"] * oriented
            items["delta_ll_context_oriented"] = items["delta_ll_context"] * oriented
            if opts["generate"]:
                self._generate(handle, items, sw, orig, new, oriented, opts, progress=progress)
        else:
            pooling = opts["pooling"]
            e_o, e_s = ((scoring.embed(handle, t, pooling=pooling, max_batch_tokens=mbt, progress=progress)
                         if t else np.zeros((0, 1))) for t in (orig, new))
            put("embedding_shift", 1.0 - (e_o.astype(np.float64) * e_s).sum(1))
        for c in ("spans", "new_spans"):
            items[c] = items[c].map(lambda sp: ";".join(f"{a}-{b}" for a, b in sp))
        return items

    @staticmethod
    def _positive_class(handle: ModelHandle, positive_class: int | str | None) -> int | None:
        cfg = handle.model.config
        n = int(cfg.num_labels)
        if positive_class is None:
            return 1 if n == 2 else None
        if isinstance(positive_class, str) and not positive_class.isdigit():
            l2i = {str(k): int(v) for k, v in (getattr(cfg, "label2id", None) or {}).items()}
            if positive_class not in l2i:
                raise ProbeError(f"counterfactual: positive_class {positive_class!r} is not a label of "
                                 f"{handle.name} ({sorted(l2i)})")
            return l2i[positive_class]
        idx = int(positive_class)
        if not 0 <= idx < n:
            raise ProbeError(f"counterfactual: positive_class {idx} is out of range for {n} labels")
        return idx

    def _generate(
        self, handle: ModelHandle, items: pd.DataFrame, sw: np.ndarray, orig: list[str], new: list[str],
        oriented: np.ndarray, opts: dict[str, Any], *, progress: bool,
    ) -> None:
        """Continuations of both versions, VADER-scored (English texts only). A text any of whose
        continuations came from non-finite logits is marked in
        :data:`audit.generation.NON_FINITE_COLUMN` (ItemProbe leaves it out, reason non_finite)."""
        k = _samples(opts)
        prompts = [t for t in orig for _ in range(k)] + [t for t in new for _ in range(k)]
        # the options and prepare() have checked what generate would refuse
        outs = generate(handle, prompts, progress=progress, **settings_of(opts, seed=self.seed))
        m = len(orig)
        cont = np.asarray(list(outs), dtype=object).reshape(2, m, k)
        english = (items.loc[sw, "language"] == "en").to_numpy()
        sent = VaderScorer().score(list(outs))["vader_score"].to_numpy().reshape(2, m, k).mean(axis=2)
        sent[:, ~english] = np.nan
        for name, vals in (("continuation_original", cont[0]), ("continuation_swapped", cont[1])):
            full = np.full(len(items), None, dtype=object)
            full[sw] = [" ||| ".join(v) for v in vals]
            items[name] = full
        for name, vals in (("sentiment_original", sent[0]), ("sentiment_swapped", sent[1])):
            full = np.full(len(items), np.nan)
            full[sw] = vals
            items[name] = full
        items["sentiment_delta"] = items["sentiment_swapped"] - items["sentiment_original"]
        items["sentiment_delta_oriented"] = items["sentiment_delta"] * oriented
        flags = np.zeros(len(items), dtype=bool)
        flags[sw] = np.asarray(outs.non_finite, dtype=bool).reshape(2, m, k).any(axis=(0, 2))
        items[NON_FINITE_COLUMN] = flags

    def summarise(self, items: pd.DataFrame, *, kind: str = "causal-lm", seed: int = 0,
                  opts: dict[str, Any] | None = None) -> ProbeResult:
        """Metrics from a scored items table (every chunk's texts)."""
        opts = {**self.Options.defaults(), **(opts or {})}
        M = METRICS
        sw = items[items["swapped"]]
        info: dict[str, Any] = {}
        warns: list[str] = []
        fns: dict[str, Any] = {}

        def mean(name: str, column: str, **kw: Any) -> None:
            """Metric ``name``: the mean of ``column`` over the swapped texts (signed: Wilcoxon test vs 0)."""
            fns[name] = lambda d: mean_metric(M[name], d[column], seed=seed, **kw)

        if kind == "classifier":
            fns["flip_rate"] = lambda d: untested_rate(M["flip_rate"], d["flip"].to_numpy(float), "texts")
            mean("mean_abs_delta_p", "abs_delta_p", test="none")
            if "delta_p_oriented" in items:
                mean("mean_delta_p", "delta_p_oriented")
                info["positive_class"] = opts["positive_class"]
        elif kind in ("causal-lm", "masked-lm"):
            info["scoring"] = "causal log-likelihood (BOS prepended)" if kind == "causal-lm" else "masked pseudo-log-likelihood"
            mean("mean_delta_ll", "delta_ll_oriented")
            mean("mean_abs_delta_ll", "delta_ll", test="none", transform=np.abs)
            mean("mean_delta_ll_context", "delta_ll_context_oriented")
            mean("mean_abs_delta_ll_context", "delta_ll_context", test="none", transform=np.abs)
            if "sentiment_delta" in items:
                settings = GenerationSettings(**settings_of(opts, seed=int(seed)))
                info["generation"] = {**settings.as_dict(), "num_samples": _samples(opts),
                                      "scorer": "VADER compound (mean over samples)"}
                non_english = int((sw["language"] != "en").sum())
                if non_english:
                    warns.append(f"sentiment: VADER is an English lexicon; {non_english} non-English texts were "
                                 "generated but not scored")
                mean("sentiment_gap", "sentiment_delta_oriented")
                mean("mean_abs_sentiment_shift", "sentiment_delta", test="none", transform=np.abs)
        else:
            info["pooling"] = opts["pooling"]
            mean("mean_embedding_shift", "embedding_shift", test="none")
        no_term = ~items["swapped"].to_numpy(bool)
        summary = {"no_term_rate": untested_rate(M["no_term_rate"], no_term, "texts")}
        summary.update({name: fn(sw) for name, fn in fns.items()})
        primary = PRIMARY[kind]
        breakdown = pd.concat(
            [group_breakdown(sw, by, fns) for by in ("category", "language")], ignore_index=True
        ) if len(sw) else pd.DataFrame()
        warns += [f"{k}: {v.warning}" for k, v in summary.items() if v.warning]
        if no_term.any():
            warns.append(f"{int(no_term.sum())} of {len(items)} texts have no swappable term and were not scored "
                         f"(ids: {', '.join(items.loc[no_term, 'id'].astype(str).tolist()[:20])})")
        effect = {"classifier": "abs_delta_p", "encoder": "embedding_shift"}.get(kind, "delta_ll_context")
        return ProbeResult(
            "counterfactual", summary, items, breakdown, warnings=warns,
            item_effect=effect, item_text=["text", "swapped_text", "terms"],
            info={
                **info,
                "primary_metric": primary, "kind": kind,
                "n_texts": int(len(items)), "n_swapped": int((~no_term).sum()), "n_no_term": int(no_term.sum()),
                "no_term_ids": items.loc[no_term, "id"].astype(str).tolist(),
                "n_without_direction": int(((items["direction"] == 0) & items["swapped"]).sum()),
                "languages": sorted(items["language"].unique().tolist()),
            },
        )


def _samples(opts: dict[str, Any]) -> int:
    """Continuations per text: ``num_samples`` when sampling, one greedy one otherwise."""
    return opts["num_samples"] if opts["do_sample"] else 1
