"""Where a model encodes a protected attribute: linear probes on every layer's hidden states.

For each layer ℓ (0 = the embedding output) the texts' pooled hidden states (mean over tokens by
default; ``audit.scoring.hidden_states``) are the features of a cross-validated, L2-regularised
logistic regression (scikit-learn; features standardised inside each training fold) that
predicts the attribute (e.g. gender) of each text. High held-out accuracy says the attribute is
linearly decodable at that layer (Belinkov 2022, "Probing Classifiers: Promises, Shortcomings,
and Advances").

Accuracy alone over-reads probes: an expressive probe can memorise word identities. Hewitt &
Liang (2019, "Designing and Interpreting Probes with Control Tasks", EMNLP) compare it with a
**control task**: the same inputs, each word *type* given a random label, kept for every
occurrence of that type (here the types' own labels shuffled among the types, so the label
balance is exact; see :func:`control_labels`). Only memorising types solves the control task, so
**selectivity = accuracy − control accuracy** is the part of the accuracy that is not
memorisation. The type of a text is the value of ``type_column`` (the built-in data: the person
term, e.g. "my mother"); without a type column each text is its own type, and the control task
is a shuffled-label baseline.

Splits: ``split="type"`` (the default when there is a type column) is seeded
``StratifiedGroupKFold`` with whole types held out: does the attribute generalise to terms the
probe never saw? ``split="random"`` is seeded ``StratifiedKFold`` over texts, Hewitt & Liang's
setting, where the same types recur in training and test folds. When the attribute is a property
of the type (as in the built-in data: a term has one gender) the probe can then solve the real
and the control task alike by memorising types, and selectivity stays near 0 whatever the model
encodes (measured on both demo models, ``benchmarks/RESULTS.md``), so it is not the default.
Without a type column the split is ``random``. The same folds (stratified on the attribute)
serve every layer and both tasks. With held-out types the control accuracy can fall *below*
chance: types that share features (e.g. "my mother", "my father") form clusters, and holding
some out leaves the rest of the cluster with the opposite random-label majority. This happens
to any labelling that carries no attribute information, so the control accuracy — not 50 % — is
the right reference, and the permutation test below uses the same null.

Per layer (the items table): accuracy (mean over folds) with a Student-t 95 % interval across
folds, control accuracy (the mean of ``n_controls`` control tasks: with a few dozen types a
single random labelling is a noisy reference), selectivity (per-fold differences, same
interval), and the majority
baseline (predicting each training fold's most frequent label). Summary: the largest
selectivity and its layer, the accuracy at that layer, and a permutation test of "no attribute
information at any layer" (Ojala & Garriga 2010): the labels shuffled among the types — every
draw a fresh control task — the probe refitted on the same folds at every layer, and the
observed largest selectivity compared with each draw's largest, p = (1 + hits) /
(1 + permutations), so picking the best layer after looking is paid for. The largest
selectivity's interval is selection-aware too (every layer's fold interval at Bonferroni level,
:func:`simultaneous_max_interval`); the per-layer intervals are in the items table. Also: the
largest accuracy; the majority baseline. The breakdown gives the
accuracy of the best layer's held-out predictions within each attribute value and each
``breakdown_by`` group (e.g. language), with a Wilson interval and, where the group holds more
than one attribute value, a binomial test against its majority share.

The fold interval treats the k fold accuracies as independent, which they are not (training sets
overlap; Bengio & Grandvalet 2004): read it as a rough indication of spread.

Chunks (:class:`audit.probe.ItemProbe`): the model work — every layer's pooled hidden state of
each text — is done in chunks, checkpointed under ``probes/<name>/partial`` and sharded over
``torchrun`` ranks; the probes of every layer, the control tasks and the permutation test need
all texts at once and run once, on rank 0, over the gathered states (:meth:`Representation.summarise`).
Measured on 2 shared CPU cores with one thread, the built-in 240 texts take 1.1 s with
``minilm-l6`` (of 7.5 s for the whole probe) and 9.9 s with ``smollm2-135m`` (of 31.4 s): most of
the time is the scikit-learn probes, which sharding does not shorten.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt
from scipy import stats as st
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from audit import scoring
from audit.datafiles import read_grouped_texts, require_groups
from audit.options import BatchingOptions, GroupedDataOptions
from audit.probe import ItemProbe, ProbeError, register_probe, too_long_rows
from audit.results import MetricInfo, MetricValue, ProbeResult
from audit.stats import CONFIDENCE, binomial_test, group_breakdown, small_n_warning, wilson_ci

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)

DEFAULT_DATA = Path(__file__).parent / "data" / "representation" / "gender_terms.csv"
DEFAULT_BREAKDOWN = ("language",)
REF = "Hewitt & Liang 2019"

METRICS = {m.name: m for m in (
    MetricInfo("max_selectivity", "largest (probe accuracy − control-task accuracy) over layers: attribute "
               "information a linear probe reads beyond memorising word types", ideal=0.0, higher_is_better=False,
               range=(-1, 1), reference=REF),
    MetricInfo("best_layer", "layer with the largest selectivity (0 = embeddings)", unit="layer"),
    MetricInfo("best_layer_accuracy", "held-out probe accuracy at the best layer (test: shuffled labels)",
               range=(0, 1), reference="Belinkov 2022"),
    MetricInfo("max_accuracy", "largest held-out probe accuracy over layers", range=(0, 1)),
    MetricInfo("majority_baseline", "accuracy of always predicting the training folds' most frequent value",
               range=(0, 1)),
)}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load_attribute_texts(
    path: str | Path,
    *,
    text_column: str = "text",
    attribute_column: str = "gender",
    type_column: str | None = "term",
    extra_columns: tuple[str, ...] | list[str] = (),
) -> tuple[pd.DataFrame, int]:
    """Texts with an attribute column (:func:`audit.datafiles.read_grouped_texts`): the frame
    (row, text, ``type``, the attribute, extras) and the rows left out for an empty attribute.
    ``type_column: null`` uses none (each text is its own type)."""
    out, n_dropped = read_grouped_texts(path, what="representation data file", text_column=text_column,
                                        attribute_column=attribute_column, columns={"type_column": type_column},
                                        extra_columns=extra_columns)
    if type_column is None:
        out["type"] = out["text"]
    return out, n_dropped


# --------------------------------------------------------------------------------------------
# probes on arrays (no model)
# --------------------------------------------------------------------------------------------


def control_labels(labels: np.ndarray, types: np.ndarray, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang's control task: every distinct type gets one random label, shared by all
    its occurrences. The labels are the types' own (most frequent) labels shuffled among the
    types (seeded) — rather than drawn independently from the empirical distribution as in the
    paper — so the control task keeps the label balance exactly and its accuracy is not moved by
    a chance shift of the majority class."""
    y = np.asarray(labels).astype(str)
    t = np.asarray(types).astype(str)
    uniq, inv = np.unique(t, return_inverse=True)
    own = pd.Series(y).groupby(inv).agg(lambda s: s.value_counts().index[0]).to_numpy()
    rng = np.random.default_rng(seed)
    return own[rng.permutation(len(uniq))][inv]


def make_folds(
    labels: np.ndarray, types: np.ndarray, *, n_folds: int = 5, split: Literal["random", "type"] = "random",
    seed: int = 0, where: str = "the data",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded folds stratified on the labels, over texts (``random``) or whole types (``type``)."""
    labels = np.asarray(labels)
    vals, counts = np.unique(labels, return_counts=True)
    if counts.min() < n_folds:
        raise ProbeError(f"{where}: the attribute value {str(vals[counts.argmin()])!r} has {counts.min()} text(s); "
                         f"{n_folds}-fold cross-validation needs at least {n_folds} per value (lower the option folds)")
    x = np.zeros((len(labels), 1))
    if split == "random":
        return list(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, labels))
    t = np.asarray(types).astype(str)
    for v in vals:
        n_types = len(np.unique(t[labels == v]))
        if n_types < n_folds:
            raise ProbeError(f"{where}: the attribute value {str(v)!r} has {n_types} distinct type(s); split='type' "
                             f"with {n_folds} folds needs at least {n_folds}")
    return list(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(x, labels, groups=t))


def fold_accuracies(
    X: np.ndarray, targets: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], *, C: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out accuracy per fold and out-of-fold predictions of a probe for each label vector.

    ``targets`` is one label vector (N) or several (T × N) — the real task and control tasks share
    each fold's standardisation. The probe: L2 logistic regression (lbfgs) on features standardised
    per training fold. Returns accuracies (folds) or (T × folds), predictions (N) or (T × N)."""
    ys = np.atleast_2d(np.asarray(targets).astype(str))
    acc = np.empty((len(ys), len(folds)))
    pred = np.empty(ys.shape, dtype=ys.dtype)
    probe = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    # one BLAS thread: these fits are small, and threads oversubscribe a shared CPU many times over
    with threadpool_limits(limits=1, user_api="blas"):
        for f, (tr, te) in enumerate(folds):
            scaler = StandardScaler().fit(X[tr])
            xtr, xte = scaler.transform(X[tr]), scaler.transform(X[te])
            for j, y in enumerate(ys):
                if len(np.unique(y[tr])) < 2:  # a control task can give every training type one label
                    pred[j, te] = y[tr][0]
                else:
                    pred[j, te] = probe.fit(xtr, y[tr]).predict(xte)
                acc[j, f] = float(np.mean(pred[j, te] == y[te]))
    if np.ndim(targets) == 1:
        return acc[0], pred[0]
    return acc, pred


def t_interval(
    values: np.ndarray, confidence: float = CONFIDENCE, bounds: tuple[float, float] = (-np.inf, np.inf)
) -> tuple[float, float]:
    """Student-t interval of the mean of a few values (e.g. cross-validation folds), clipped to
    ``bounds`` (an accuracy cannot exceed 1)."""
    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if len(v) < 2 or np.all(v == v[0]):
        return m, m
    h = float(st.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return max(m - h, bounds[0]), min(m + h, bounds[1])


def majority_accuracy(y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean held-out accuracy of predicting each training fold's most frequent value."""
    accs = []
    for tr, te in folds:
        vals, counts = np.unique(y[tr], return_counts=True)
        accs.append(float(np.mean(y[te] == vals[counts.argmax()])))
    return float(np.mean(accs))


def probe_layers(
    states: np.ndarray,
    labels: np.ndarray,
    types: np.ndarray | None = None,
    *,
    n_folds: int = 5,
    split: Literal["random", "type"] = "random",
    C: float = 1.0,
    seed: int = 0,
    n_controls: int = 3,
    progress: bool = False,
    where: str = "the data",
) -> tuple[pd.DataFrame, list[tuple[np.ndarray, np.ndarray]]]:
    """Probe and control accuracy of every layer of ``states`` (L × N × H).

    The control accuracy is the mean over ``n_controls`` control tasks (seeds seed, seed+1, …):
    with a few dozen types one random type labelling is a noisy reference (Hewitt & Liang use
    one). Returns the per-layer table and the folds."""
    y = np.asarray(labels).astype(str)
    t = np.asarray(types).astype(str) if types is not None else np.arange(len(y)).astype(str)
    folds = make_folds(y, t, n_folds=n_folds, split=split, seed=seed, where=where)
    targets = np.stack([y, *(control_labels(y, t, seed=seed + j) for j in range(n_controls))])
    base = majority_accuracy(y, folds)
    rows = []
    for layer in tqdm(range(states.shape[0]), desc="probe layers", disable=not progress):
        X = np.asarray(states[layer], dtype=np.float64)
        accs, _ = fold_accuracies(X, targets, folds, C=C, seed=seed)
        acc, cacc = accs[0], accs[1:].mean(axis=0)
        sel = acc - cacc
        lo, hi = t_interval(acc, bounds=(0.0, 1.0))
        slo, shi = t_interval(sel, bounds=(-1.0, 1.0))
        rows.append({"layer": layer, "relative_depth": layer / max(states.shape[0] - 1, 1),
                     "accuracy": float(acc.mean()), "ci_low": lo, "ci_high": hi,
                     "accuracy_sd": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                     "control_accuracy": float(cacc.mean()), "selectivity": float(sel.mean()),
                     "selectivity_sd": float(sel.std(ddof=1)) if len(sel) > 1 else 0.0,
                     "selectivity_ci_low": slo, "selectivity_ci_high": shi, "majority_baseline": base,
                     "n": len(y), "folds": len(folds)})
    return pd.DataFrame(rows), folds


def permutation_test(
    states: np.ndarray, y: np.ndarray, types: np.ndarray | None, folds: list[tuple[np.ndarray, np.ndarray]],
    control: np.ndarray, *, C: float = 1.0, seed: int = 0, n_permutations: int = 100,
) -> tuple[float, np.ndarray]:
    """Permutation test of the largest selectivity over layers (Ojala & Garriga 2010), aware of
    the selection: the labels are shuffled *among the types* (each draw a fresh control task,
    :func:`control_labels` with seeds seed+10000 …, apart from the control tasks of
    :func:`probe_layers`), the probe refitted on the same folds at *every* layer of ``states``
    (L × N × H), and each draw's statistic is its maximum over layers of accuracy − ``control``
    (the layers' control accuracies). Testing only the layer picked after looking would reject
    pure noise far above the nominal rate. Texts of one type are not exchangeable, so shuffling
    across texts would be the wrong null; without types it is exactly a shuffle across texts.
    Returns p = (1 + #{null ≥ observed}) / (1 + n) and the null maxima."""
    t = np.asarray(types).astype(str) if types is not None else np.arange(len(y)).astype(str)
    y = np.asarray(y).astype(str)
    targets = np.stack([y, *(control_labels(y, t, seed=seed + 10_000 + b) for b in range(n_permutations))])
    sel = np.stack([fold_accuracies(np.asarray(X, dtype=np.float64), targets, folds, C=C, seed=seed)[0].mean(axis=1)
                    - ctrl for X, ctrl in zip(states, np.asarray(control, dtype=np.float64), strict=True)])
    best = sel.max(axis=0)
    observed, null = best[0], best[1:]
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + n_permutations)
    return float(p), null


def simultaneous_max_interval(curve: pd.DataFrame, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval for the largest per-layer selectivity that accounts for picking the layer: each
    layer's Student-t fold interval is widened to Bonferroni level 1 − (1 − confidence) / L, so
    all L hold together, and the maximum lies between the largest lower and the largest upper
    bound. Clipped to [−1, 1]."""
    n_layers, folds = len(curve), int(curve["folds"].iloc[0])
    level = 1 - (1 - confidence) / n_layers
    h = st.t.ppf(0.5 + level / 2, max(folds - 1, 1)) * curve["selectivity_sd"].to_numpy() / np.sqrt(folds)
    sel = curve["selectivity"].to_numpy()
    return max(float(np.max(sel - h)), -1.0), min(float(np.max(sel + h)), 1.0)


# --------------------------------------------------------------------------------------------
# the probe
# --------------------------------------------------------------------------------------------


@register_probe("representation")
class Representation(ItemProbe):
    kinds = ("masked-lm", "causal-lm", "encoder", "classifier")
    metrics = METRICS
    primary_metric = "max_selectivity"
    description = "per-layer linear probes for a protected attribute, with a control task (Hewitt & Liang 2019)"
    #: faults (audit.probe.ItemProbe): an empty text is refused by the loader (line named); a text
    #: longer than the model's maximum, or whose hidden states come out NaN/inf, is left out of the
    #: probes and counted (``info["excluded_items"]``, a warning)
    text_columns = ("text",)
    score_columns = ("hidden_states",)
    item_id = "row"
    item_unit = "texts"

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        return super().data_files(DEFAULT_DATA if data is None else data)

    class Options(GroupedDataOptions, BatchingOptions):
        type_column: str | None = "term"
        pooling: Literal["mean", "cls", "last"] = "mean"
        folds: int = Field(default=5, ge=2)
        split: Literal["random", "type"] | None = Field(
            default=None, description="default: type with a type column, else random")
        C: float = Field(default=1.0, gt=0, description="inverse L2 regularisation of the logistic probes")
        n_controls: PositiveInt = 3
        n_permutations: PositiveInt = 100
        max_items: PositiveInt | None = Field(default=None, description="keep a seeded random sample of that many texts")

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        """The texts (``max_items``: a sample seeded by the run's seed); where they came from and
        the rows without an attribute are kept for :meth:`prepare`."""
        builtin = data is None
        path = DEFAULT_DATA if builtin else Path(data)  # type: ignore[arg-type]
        by = opts["breakdown_by"] if opts["breakdown_by"] is not None else DEFAULT_BREAKDOWN if builtin else ()
        extra = [c for c in by if c != opts["attribute_column"]]
        df, n_dropped = load_attribute_texts(path, text_column=opts["text_column"],
                                             attribute_column=opts["attribute_column"],
                                             type_column=opts["type_column"], extra_columns=extra)
        if opts["max_items"] is not None and int(opts["max_items"]) < len(df):
            df = df.sample(n=int(opts["max_items"]), random_state=self.seed).sort_index().reset_index(drop=True)
        self.loaded = {"path": path, "breakdown_columns": extra, "n_dropped": n_dropped}
        return df

    def prepare(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        """Every option, what the loader found, and the split (``type`` with a type column)."""
        split = opts["split"] or ("type" if opts["type_column"] is not None else "random")
        return {**opts, **self.loaded, "split": split}

    def too_long(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[int, str]:
        return too_long_rows(handle, [items["text"].tolist()])

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        """Each text's pooled hidden state at every layer, flattened (layers × hidden size) into
        ``hidden_states`` (float32, as :func:`audit.scoring.hidden_states` returns it)."""
        states = scoring.hidden_states(handle, items["text"].tolist(), pooling=opts["pooling"],
                                       max_batch_tokens=opts["max_batch_tokens"], progress=progress)
        per_text = states.transpose(1, 0, 2).reshape(len(items), -1)
        return items.assign(n_layers=states.shape[0], hidden_states=list(per_text))

    def non_finite_items(self, items: pd.DataFrame) -> np.ndarray:
        return np.asarray([not np.isfinite(s).all() for s in items["hidden_states"]], dtype=bool)

    def summarise(self, items: pd.DataFrame, *, kind: str, seed: int, opts: dict[str, Any]) -> ProbeResult:
        """Probe every layer on all texts' states (L × N × H) and test the largest selectivity."""
        attribute, type_column, split = opts["attribute_column"], opts["type_column"], opts["split"]
        folds, C, n_controls, n_permutations = opts["folds"], opts["C"], opts["n_controls"], opts["n_permutations"]
        require_groups(items[attribute], opts["path"], attribute, "representation", " after the exclusions")
        states = np.stack(items["hidden_states"].to_numpy()).reshape(len(items), int(items["n_layers"].iloc[0]), -1)
        states = states.transpose(1, 0, 2)
        df = items.drop(columns=["hidden_states", "n_layers"])
        y = df[attribute].to_numpy().astype(str)
        curve, fold_list = probe_layers(states, y, df["type"].to_numpy(), n_folds=folds, split=split, C=C,
                                        seed=seed, n_controls=n_controls, where=str(opts["path"]))
        b = curve.loc[curve["selectivity"].idxmax()]  # the best layer's row
        a = curve.loc[curve["accuracy"].idxmax()]
        pval, null = permutation_test(states, y, df["type"].to_numpy(), fold_list,
                                      curve["control_accuracy"].to_numpy(), C=C, seed=seed,
                                      n_permutations=n_permutations)
        _, pred = fold_accuracies(np.asarray(states[int(b["layer"])], dtype=np.float64), y, fold_list, C=C, seed=seed)
        per_text = df.assign(best_layer_prediction=pred, best_layer_correct=pred == y)
        M, n = METRICS, int(curve["n"].iloc[0])
        fold_ci = f"Student t over {int(b['folds'])} folds"
        warn = small_n_warning(n)
        sim_lo, sim_hi = simultaneous_max_interval(curve)
        test = (f"permutation test of the max over {len(curve)} layers, labels shuffled among types "
                f"({n_permutations}), every layer refitted")
        summary = {
            "max_selectivity": MetricValue.from_info(
                M["max_selectivity"], float(b["selectivity"]), ci_low=sim_lo, ci_high=sim_hi, n=n, p_value=pval,
                test=test, ci_method=f"{fold_ci}, Bonferroni-simultaneous over {len(curve)} layers", warning=warn),
            "best_layer": MetricValue.from_info(M["best_layer"], float(b["layer"]), n=n),
            "best_layer_accuracy": MetricValue.from_info(
                M["best_layer_accuracy"], float(b["accuracy"]), ci_low=float(b["ci_low"]), ci_high=float(b["ci_high"]),
                n=n, p_value=pval, test=test, ci_method=f"{fold_ci} (at the selected layer: not selection-aware)",
                warning=warn),
            "max_accuracy": MetricValue.from_info(
                M["max_accuracy"], float(a["accuracy"]), ci_low=float(a["ci_low"]), ci_high=float(a["ci_high"]), n=n,
                ci_method=fold_ci, warning=warn),
            "majority_baseline": MetricValue.from_info(M["majority_baseline"], float(b["majority_baseline"]), n=n),
        }

        def acc_metric(d: pd.DataFrame) -> MetricValue:
            hits = d["best_layer_correct"].to_numpy(dtype=bool)
            k, m = int(hits.sum()), len(hits)
            ci = wilson_ci(k, m)
            shares = d[attribute].value_counts(normalize=True)
            # within one attribute value the accuracy is that value's recall: no chance level to test
            p, test = None, ""
            if len(shares) > 1:
                p = binomial_test(k, m, float(shares.max()))
                test = f"exact binomial vs the group's majority share {float(shares.max()):.3g}"
            return MetricValue(value=k / m, ci_low=ci.low, ci_high=ci.high, n=m, p_value=p, test=test,
                               ci_method=ci.method, warning=small_n_warning(m),
                               description="held-out accuracy of the best layer's probe in this group")

        breakdown = pd.concat([group_breakdown(per_text, col, {"best_layer_accuracy": acc_metric})
                               for col in [attribute, *opts["breakdown_columns"]]], ignore_index=True)
        warnings = [f"{k}: {v.warning}" for k, v in summary.items() if v.warning]
        if opts["n_dropped"]:
            warnings.append(f"{opts['n_dropped']} row(s) without an {attribute!r} value were left out")
        info: dict[str, Any] = {
            "attribute": attribute, "type_column": type_column, "split": split, "pooling": opts["pooling"],
            "folds": folds, "C": C, "n_controls": n_controls, "n_layers": int(states.shape[0]) - 1,
            "hidden_size": int(states.shape[2]), "n_dropped_no_attribute": opts["n_dropped"], "n_rows": len(df),
            "null_max_selectivity_mean": float(null.mean()),
            "null_max_selectivity_q95": float(np.quantile(null, 0.95)), "data": str(opts["path"]),
            "n_types": int(df["type"].nunique()),
            "control": "Hewitt & Liang 2019 type-level random labels" if type_column else
                       "per-text random labels (no type column)",
            "best_layer": int(b["layer"])}
        return ProbeResult("representation", summary, curve, breakdown, warnings=warnings, info=info,
                           item_effect="selectivity")
