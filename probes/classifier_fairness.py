"""Group fairness of a classifier's decisions on labelled data with a sensitive attribute.

Metrics, intervals and tests: :mod:`probes.group_fairness` (model-free).

Labels: a binary label column, or a multi-class one evaluated one-vs-rest against
``positive_label`` (y = label is the positive label, ŷ = the model's top label is the positive
label, score = the model's probability of the positive label). Rows with an empty attribute are
left out (counted in ``info["n_dropped_no_attribute"]``).

Models:

* ``classifier`` — a sequence-classification head; dataset labels map to the model's outputs by
  ``id2label`` name (case-insensitive), else as integer output indices, else through the option
  ``label_map``; texts are scored in length-sorted batches.
* ``causal-lm`` — a zero-shot classifier: ``prompt`` (containing ``{text}``) is the context and
  each label's word in ``label_words`` the continuation; a label's score is the summed log-prob
  of its word's tokens (``audit.scoring.continuation_logprobs``), and the probabilities are the
  softmax over the label words.

Items: one row per text with its label, attribute (and breakdown columns), ``y_true``,
``y_pred`` (positive decision), ``predicted_label``, ``y_score`` (probability of the positive
label), ``correct``, ``score_error`` = y_score − y_true (ranks the worst-scored rows), and
``score_<label>`` — the label word's summed log-prob (zero-shot) or the head's logit (classifier).

Built-in data (no ``data`` given): ``probes/data/fairness/sentiment_eec.csv``, sentiment
templates in the style of the Equity Evaluation Corpus (Kiritchenko & Mohammad 2018) in English
and Turkish, attribute ``gender`` (or ``race`` for the English first names), broken down by
``language`` too.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field, PositiveInt
from scipy.special import softmax

from audit import scoring
from audit.datafiles import grouped_rows, label_strings, read_grouped_texts, read_table
from audit.options import BatchingOptions, GroupedDataOptions
from audit.probe import ItemProbe, ProbeError, WithoutModel, register_probe
from audit.results import MetricValue, ProbeResult
from probes.group_fairness import (
    AUC_KINDS,
    METRICS,
    bias_aucs,
    fairness_breakdown,
    fairness_summary,
)

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).parent / "data" / "fairness" / "sentiment_eec.csv"
DEFAULT_PROMPT = "{text} This sentence is"
DEFAULT_LABEL_WORDS = {"0": " negative", "1": " positive"}
DEFAULT_BREAKDOWN = ("language",)

# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


@dataclass
class LabelledData:
    """A loaded dataset: ``frame`` has columns row, text, label, the attribute and extras."""

    frame: pd.DataFrame
    positive_label: str
    labels: list[str]
    n_dropped: int = 0
    warnings: list[str] = field(default_factory=list)


def _match_label(value: Any, labels: list[str]) -> str | None:
    key = str(value).strip().lower()
    return next((lab for lab in labels if lab.lower() == key), None)


def default_positive_label(labels: list[str]) -> str | None:
    """The conventional positive label of a binary column: 1 of {0, 1}, true of {false, true}."""
    low = {lab.lower(): lab for lab in labels}
    for neg, pos in (("0", "1"), ("false", "true")):
        if set(low) == {neg, pos}:
            return low[pos]
    return None


def load_labelled(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    attribute_column: str = "gender",
    positive_label: Any = None,
    extra_columns: tuple[str, ...] | list[str] = (),
) -> LabelledData:
    """Read a labelled CSV/TSV/Parquet file (:func:`audit.datafiles.read_grouped_texts`); every
    error names the file and the column or row (``row``: the file's line number for CSV/TSV, the
    0-based row for Parquet)."""
    p = Path(path)
    out, n_dropped = read_grouped_texts(p, what="classifier_fairness data file", text_column=text_column,
                                        attribute_column=attribute_column, columns={"label_column": label_column},
                                        extra_columns=extra_columns, needs="group fairness")
    warnings = [f"{n_dropped} row(s) of {p.name} have no {attribute_column!r} value and were left out"] if n_dropped \
        else []
    label_set = sorted(out["label"].unique())
    if len(label_set) < 2:
        raise ProbeError(f"{p}: the label column {label_column!r} has a single value ({label_set[0]!r})")
    if positive_label is None:
        pos = default_positive_label(label_set)
        if pos is None:
            kind = "binary" if len(label_set) == 2 else f"{len(label_set)}-class (evaluated one-vs-rest)"
            raise ProbeError(
                f"{p}: the {kind} label column {label_column!r} has labels {label_set}; set the option "
                "positive_label to the one that counts as the positive decision"
            )
    else:
        pos = _match_label(positive_label, label_set)
        if pos is None:
            raise ProbeError(
                f"{p}: positive_label {positive_label!r} is not a value of column {label_column!r} "
                f"(values: {label_set})"
            )
    return LabelledData(out, pos, label_set, n_dropped, warnings)


_TRUE_WORDS, _FALSE_WORDS = {"1", "true", "yes"}, {"0", "false", "no"}
#: options that only mean something when a model scores texts
MODEL_OPTIONS = ("text_column", "label_column", "prompt", "label_words", "label_map", "max_batch_tokens")


def _decisions(col: pd.Series, column: str, positive_label: Any, p: Path, where: str, rows: np.ndarray) -> np.ndarray:
    """A y_true / y_pred column as booleans: 0/1, true/false, yes/no — or, with
    ``positive_label``, the rows whose label equals it."""
    vals = label_strings(col)
    empty = np.flatnonzero((vals == "").to_numpy())
    if len(empty):
        raise ProbeError(f"{p}: {where} {rows[int(empty[0])]}: empty {column!r}")
    if positive_label is not None:
        return (vals == str(positive_label).strip()).to_numpy()
    low = vals.str.lower()
    bad = np.flatnonzero(~low.isin(_TRUE_WORDS | _FALSE_WORDS).to_numpy())
    if len(bad):
        i = int(bad[0])
        raise ProbeError(f"{p}: {where} {rows[i]}: {column!r} is {vals.iloc[i]!r}; use 0/1 or true/false (or set "
                         "the option positive_label to the label that counts as positive)")
    return low.isin(_TRUE_WORDS).to_numpy()


def load_predictions(
    path: str | Path, *, attribute_column: str = "gender", positive_label: Any = None,
    extra_columns: tuple[str, ...] | list[str] = (),
) -> tuple[pd.DataFrame, int, list[str]]:
    """Read a predictions file (CSV/TSV/Parquet) of a classifier's logged decisions — the way
    fairlearn and Aequitas users audit: columns ``y_true`` and ``y_pred`` (0/1, true/false, or
    labels with ``positive_label``), optional ``y_score`` (the positive-class score, any finite
    number; without it the AUC metrics are not computed) and the attribute column. Returns
    (items with row, y_true, y_pred, y_score (NaN without scores), the attribute and extras;
    rows left out for an empty attribute; warnings). Errors name the file and the row or column."""
    p = Path(path)
    df = read_table(p, what="classifier_fairness predictions file", extra_columns=extra_columns,
                    options={"attribute_column": attribute_column})
    for col in ("y_true", "y_pred"):
        if col not in df.columns:
            raise ProbeError(f"{p}: a predictions file needs the column {col!r} (with y_pred, optional y_score and "
                             f"the attribute); found columns {list(df.columns)}")
    where = str(df.index.name)
    rows = df.index.to_numpy()
    df = df.reset_index(drop=True)
    out = pd.DataFrame({"row": rows,
                        "y_true": _decisions(df["y_true"], "y_true", positive_label, p, where, rows),
                        "y_pred": _decisions(df["y_pred"], "y_pred", positive_label, p, where, rows),
                        attribute_column: label_strings(df[attribute_column])})
    if "y_score" in df.columns:
        score = pd.to_numeric(df["y_score"].replace("", np.nan), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(score))
        if len(bad):
            raise ProbeError(f"{p}: {where} {rows[int(bad[0])]}: 'y_score' is {df['y_score'].iloc[int(bad[0])]!r}, "
                             "not a finite number")
        out["y_score"] = score
    else:
        out["y_score"] = np.nan
    for col in extra_columns:
        if col != attribute_column:
            out[col] = label_strings(df[col])
    out, n_dropped = grouped_rows(out, p, attribute_column, "group fairness")
    warnings = [f"{n_dropped} row(s) of {p.name} have no {attribute_column!r} value and were left out"] \
        if n_dropped else []
    if out["y_true"].all() or not out["y_true"].any():
        raise ProbeError(f"{p}: column 'y_true' has a single value; the metrics need both classes")
    if "y_score" not in df.columns:
        warnings.append(f"{p.name} has no 'y_score' column: the AUC metrics (auc, subgroup / BPSN / BNSP) are "
                        "not computed")
    return out, n_dropped, warnings



# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def zero_shot_logprobs(
    handle: ModelHandle, texts: list[str], prompt: str, words: list[str], *,
    max_batch_tokens: int | None = None, progress: bool = False,
) -> np.ndarray:
    """(N × K) summed log-prob of each label word after the filled-in prompt (causal LM)."""
    contexts = [prompt.replace("{text}", t) for t in texts]
    ctx = [c for c in contexts for _ in words]
    cont = [w for _ in contexts for w in words]
    # all label words of one text share its prompt: run each prompt once
    lps = scoring.continuation_logprobs(handle, ctx, cont, max_batch_tokens=max_batch_tokens, progress=progress)
    return np.asarray([float(x.sum()) for x in lps]).reshape(len(texts), len(words))


def classifier_logits(
    handle: ModelHandle, texts: list[str], *, max_batch_tokens: int | None = None, progress: bool = False,
) -> np.ndarray:
    """(N × num_labels) logits of a sequence classifier, texts in length-sorted batches."""
    tok = handle.tokenizer
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=True)["input_ids"]]
    scoring.check_length(handle, max(lengths), "a text to classify")
    budget = max_batch_tokens or scoring.default_batch_tokens(handle)
    out = np.empty((len(texts), int(handle.model.config.num_labels)), dtype=np.float64)

    def step(idx: np.ndarray) -> None:
        enc = tok([texts[i] for i in idx], padding=True, return_tensors="pt").to(handle.device)
        with torch.inference_mode():
            out[idx] = handle.model(**enc).logits.float().cpu().numpy()

    scoring.run_batches(scoring.length_sorted_batches(lengths, budget), step, desc="classify", progress=progress)
    return out


def _by_label(mapping: dict[Any, Any], labels: list[str], option: str, where: str, entry: str = "entry") -> dict[str, Any]:
    """The option ``mapping`` keyed by the dataset labels its keys name (case-insensitive); every
    label needs an entry."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        lab = _match_label(k, labels)
        if lab is None:
            raise ProbeError(f"{option} key {k!r} is not a label of {where} (labels: {labels})")
        out[lab] = v
    missing = [lab for lab in labels if lab not in out]
    if missing:
        raise ProbeError(f"{option} has no {entry} for the label(s) {missing} of {where}")
    return out


def classifier_label_map(
    handle: ModelHandle, labels: list[str], label_map: dict[Any, Any] | None, where: str
) -> dict[str, int]:
    """Dataset label → model output index: ``label_map`` if given, else by ``id2label`` name
    (case-insensitive), else as integer indices."""
    n_out = int(handle.model.config.num_labels)
    id2label = {int(k): str(v) for k, v in (getattr(handle.model.config, "id2label", None) or {}).items()}
    by_name = {v.lower(): k for k, v in id2label.items()}
    if label_map:
        out: dict[str, int] = {}
        for lab, v in _by_label(label_map, labels, "label_map", where).items():
            idx = by_name.get(str(v).lower())
            if idx is None:
                with contextlib.suppress(TypeError, ValueError):
                    idx = int(v)
            if idx is None or not 0 <= idx < n_out:
                raise ProbeError(f"label_map[{lab!r}] = {v!r} is neither an id2label name {id2label} nor an "
                                 f"output index below {n_out} of {handle.name}")
            out[lab] = idx
        return out
    if all(lab.lower() in by_name for lab in labels):
        return {lab: by_name[lab.lower()] for lab in labels}
    if all(lab.lstrip("-").isdigit() and 0 <= int(lab) < n_out for lab in labels):
        return {lab: int(lab) for lab in labels}
    raise ProbeError(
        f"cannot match the labels {labels} of {where} to the outputs of {handle.name} "
        f"(id2label {id2label}); pass the option label_map, e.g. {{{labels[0]!r}: 0}}"
    )


@register_probe("classifier_fairness")
class ClassifierFairness(ItemProbe):
    kinds = ("classifier", "causal-lm")
    metrics = METRICS
    primary_metric = "equalized_odds_difference"
    description = ("group fairness of a classifier (fairlearn rates, parity gaps, Borkan AUCs); causal LMs "
                   "as zero-shot classifiers")
    #: faults (audit.probe.ItemProbe): a row longer than the model accepts, or whose logits come out
    #: NaN/inf (``y_score`` and the ``score_<label>`` columns), is left out of every metric and counted
    score_columns = ("y_score",)
    item_id = "row"
    item_unit = "rows"

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        return super().data_files(DEFAULT_DATA if data is None else data)

    class Options(GroupedDataOptions, BatchingOptions):
        """Rows are scored in chunks (sharded over ``torchrun`` ranks; each row's scores are its
        own); the MetricFrame rates, parity gaps, AUCs, bootstrap CIs and permutation tests are
        computed once over all rows. ``prompt`` and ``label_words`` make a causal LM a zero-shot
        classifier; ``label_map`` maps dataset labels to a classifier's outputs."""

        label_column: str = "label"
        positive_label: Any = None
        prompt: str | None = Field(default=None, description="zero-shot template containing {text}")
        label_words: dict[Any, Annotated[str, Field(min_length=1)]] | None = Field(
            default=None, min_length=1, description="label → word, e.g. {0: ' negative', 1: ' positive'}")
        label_map: dict[Any, Any] | None = None
        max_items: PositiveInt | None = Field(
            default=None, description="keep a seeded random sample of that many rows (file order kept)")
        n_resamples: PositiveInt = 1000
        n_permutations: PositiveInt = 1000

    #: logged decisions instead of a model (``taudit run`` with ``models: []``, or ``run(None, data)``):
    #: the same metrics, intervals and tests from a predictions file (:func:`load_predictions`)
    without_model = WithoutModel(
        data="a predictions file with columns y_true, y_pred (optional y_score) and the attribute column",
        model_options=MODEL_OPTIONS)

    def score_without_model(self, data: str | Path | None, opts: Any, *, seed: int, progress: bool) -> ProbeResult:
        """Metrics of a classifier's logged decisions (no model): :func:`load_predictions`, then
        the summary, intervals, tests and breakdown of a model run."""
        o = opts.values()
        attribute_column, n_resamples, max_items = o["attribute_column"], o["n_resamples"], o["max_items"]
        extra = [c for c in (o["breakdown_by"] or []) if c != attribute_column]
        items, n_dropped, warnings = load_predictions(data, attribute_column=attribute_column,  # type: ignore[arg-type]
                                                      positive_label=o["positive_label"], extra_columns=extra)
        if max_items is not None and int(max_items) < len(items):
            items = items.sample(n=int(max_items), random_state=seed).sort_index().reset_index(drop=True)
        has_score = bool(np.isfinite(items["y_score"]).all())
        score = items["y_score"].to_numpy() if has_score else items["y_pred"].to_numpy(dtype=np.float64)
        groups = items[attribute_column].astype(str).to_numpy()
        summary, warn = fairness_summary(items["y_true"].to_numpy(), items["y_pred"].to_numpy(), score, groups,
                                         seed=seed, n_resamples=n_resamples, n_permutations=o["n_permutations"])
        scored = items.assign(y_score=score)
        breakdown = fairness_breakdown(scored, [attribute_column, *extra], seed=seed, n_resamples=n_resamples)
        if not has_score:  # no scores, no AUCs: a hard decision's "AUC" is not the metric
            for name in ("auc", *(f"min_{k}" for k in AUC_KINDS)):
                summary[name] = MetricValue.from_info(METRICS[name], float("nan"), n=len(items),
                                                      warning="needs a y_score column")
            if len(breakdown):
                breakdown = breakdown[~breakdown["metric"].isin(AUC_KINDS)].reset_index(drop=True)
        items = items.assign(correct=items["y_true"] == items["y_pred"])
        if has_score:
            items["score_error"] = items["y_score"] - items["y_true"].astype(float)
        info: dict[str, Any] = {"mode": "predictions file (no model)", "primary_metric": self.primary_metric,
                                "data": str(data), "attribute": attribute_column,
                                "positive_label": o["positive_label"], "n_dropped_no_attribute": n_dropped,
                                "has_score": has_score}
        return ProbeResult("classifier_fairness", summary, items, breakdown, warnings=warnings + warn, info=info,
                           item_effect="score_error" if has_score else None)

    def finite_columns(self, items: pd.DataFrame) -> list[str]:
        return ["y_score", *(c for c in items.columns if c.startswith("score_") and c != "score_error")]

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        """The labelled rows (``max_items``: a sample seeded by the run's seed); what the loader
        found (labels, positive label, rows without an attribute) is kept for :meth:`prepare`."""
        builtin = data is None
        path = DEFAULT_DATA if builtin else Path(data)  # type: ignore[arg-type]
        by = opts["breakdown_by"] if opts["breakdown_by"] is not None else DEFAULT_BREAKDOWN if builtin else ()
        extra = [c for c in by if c != opts["attribute_column"]]
        ds = load_labelled(path, text_column=opts["text_column"], label_column=opts["label_column"],
                           attribute_column=opts["attribute_column"], positive_label=opts["positive_label"],
                           extra_columns=extra)
        df = ds.frame
        if opts["max_items"] is not None and int(opts["max_items"]) < len(df):
            df = df.sample(n=int(opts["max_items"]), random_state=self.seed).sort_index().reset_index(drop=True)
        self.loaded = {"builtin": builtin, "path": path, "breakdown_columns": extra, "dataset": ds}
        return df

    def prepare(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        """Every option with its default, plus what the loader found and the model's labels:
        ``candidates`` (the dataset labels scored, in order), ``words`` (zero-shot label words)
        or ``mapping`` (dataset label → classifier output)."""
        o = {**opts, **self.loaded}
        ds: LabelledData = o["dataset"]
        where = f"column {o['label_column']!r} of {o['path']}"
        if handle.kind == "causal-lm":
            if o["builtin"]:
                o["prompt"] = DEFAULT_PROMPT if o["prompt"] is None else o["prompt"]
                o["label_words"] = DEFAULT_LABEL_WORDS if o["label_words"] is None else o["label_words"]
            if o["prompt"] is None or o["label_words"] is None:
                raise ProbeError(
                    "classifier_fairness on a causal LM is a zero-shot classifier: give the options prompt "
                    "(a template containing {text}) and label_words (label → word, e.g. {0: ' negative', "
                    "1: ' positive'})"
                )
            if "{text}" not in o["prompt"]:
                raise ProbeError(f"the prompt option must contain '{{text}}', got {o['prompt']!r}")
            o["words"] = _by_label(o["label_words"], ds.labels, "label_words", where, "word")
            o["candidates"] = list(o["words"])
        else:
            if o["prompt"] is not None or o["label_words"] is not None:
                raise ProbeError("the options prompt and label_words apply to causal LMs only; a classifier "
                                 "uses its own head (map labels with label_map)")
            o["mapping"] = classifier_label_map(handle, ds.labels, o["label_map"], where)
            o["candidates"] = list(o["mapping"])
        return o

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        """Each row's label scores, positive-label probability and decision."""
        texts = items["text"].tolist()
        cand, positive = opts["candidates"], opts["dataset"].positive_label
        mbt = opts["max_batch_tokens"]
        if handle.kind == "causal-lm":
            words = opts["words"]
            scores = zero_shot_logprobs(handle, texts, opts["prompt"], [words[c] for c in cand],
                                        max_batch_tokens=mbt, progress=progress)
            probs = softmax(scores, axis=1)
            pred_labels = [cand[i] for i in probs.argmax(axis=1)]
        else:
            mapping = opts["mapping"]
            logits = classifier_logits(handle, texts, max_batch_tokens=mbt, progress=progress)
            all_probs = softmax(logits, axis=1)
            probs = all_probs[:, [mapping[c] for c in cand]]
            scores = logits[:, [mapping[c] for c in cand]]
            id2label = {int(k): str(v) for k, v in handle.model.config.id2label.items()}
            inverse = {v: k for k, v in mapping.items()}
            pred_labels = [inverse.get(int(t), id2label.get(int(t), str(t))) for t in all_probs.argmax(axis=1)]
        out = items.copy()
        out["predicted_label"] = pred_labels
        out["y_true"] = (out["label"] == positive).to_numpy()
        out["y_pred"] = (out["predicted_label"] == positive).to_numpy()
        out["y_score"] = probs[:, cand.index(positive)]
        out["correct"] = out["y_true"] == out["y_pred"]
        out["score_error"] = out["y_score"] - out["y_true"].astype(float)
        for j, c in enumerate(cand):
            out[f"score_{c}"] = scores[:, j]
        return out

    def summarise(self, items: pd.DataFrame, *, kind: str = "classifier", seed: int = 0,
                  opts: dict[str, Any] | None = None) -> ProbeResult:
        """Metrics from an items table with y_true, y_pred, y_score and the attribute column
        (``opts``: as :meth:`prepare` returns them)."""
        assert opts is not None  # execute passes the options prepare returned
        attribute, ds = opts["attribute_column"], opts["dataset"]
        info: dict[str, Any] = {"primary_metric": self.primary_metric, "attribute": attribute,
                                "positive_label": ds.positive_label, "labels": ds.labels,
                                "n_dropped_no_attribute": ds.n_dropped, "data": str(opts["path"])}
        if kind == "causal-lm":
            info.update(scoring="zero-shot: softmax over label-word log-probs", prompt=opts["prompt"],
                        label_words=opts["words"])
        else:
            info.update(scoring="classifier head: softmax over all outputs", label_map=opts["mapping"])
        y_true, y_score, groups = (items["y_true"].to_numpy(), items["y_score"].to_numpy(),
                                   items[attribute].astype(str).to_numpy())
        summary, warn = fairness_summary(y_true, items["y_pred"].to_numpy(), y_score, groups, seed=seed,
                                         n_resamples=opts["n_resamples"], n_permutations=opts["n_permutations"])
        breakdown = fairness_breakdown(items, [attribute, *opts["breakdown_columns"]], seed=seed,
                                       n_resamples=opts["n_resamples"])
        aucs = bias_aucs(y_true, y_score, groups)
        for m in AUC_KINDS:
            col = aucs[m].dropna()
            info[f"worst_group_{m}"] = str(col.idxmin()) if len(col) else None
        return ProbeResult("classifier_fairness", summary, items, breakdown, warnings=[*ds.warnings, *warn], info=info,
                           item_effect="score_error", item_text=["text"])
