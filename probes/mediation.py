"""Causal mediation analysis of gender bias (Vig et al. 2020, "Investigating Gender Bias in Language
Models Using Causal Mediation Analysis", NeurIPS, §3): which heads, attention layers and MLPs carry
the effect of a profession word on the pronoun the model predicts.

Items. A template ("The [PROFESSION] said that [PRONOUN] was tired.") filled with a profession
whose stereotype is male or female; the project's own lists (``probes/data/mediation/``, English
and Turkish) plus, with the ``winobias`` option, the WinoBias occupation lists
(``male_occupations.txt`` / ``female_occupations.txt``, Zhao et al. 2018) read from that folder at
run time. Causal LMs predict the pronoun after the text before ``[PRONOUN]``; masked LMs predict
it at ``[MASK]``. Turkish "o" is gender-neutral, so the Turkish sets contrast the gendered noun
after "O bir" (erkek / kadın).

Effects (Vig et al. 2020, eqs. 1–4). ``y(u) = p(anti-stereotypical pronoun | u) /
p(stereotypical pronoun | u)``; the intervention *set-gender* replaces the profession with the
gendered word of the other gender ("The nurse said that" → "The man said that"):

* total effect ``TE = y(set-gender) / y(null) − 1``;
* natural indirect effect of mediator z: ``NIE(z) = y(null, z ← z(set-gender)) / y(null) − 1``,
  the null prompt run with z's activation (at every position) taken from the set-gender run.

Mediators: every head's output (the input of the attention output projection, split by head),
each layer's whole attention output and each MLP output (:mod:`audit.explain.intervene`). Effects
are averaged over items (templates × professions) with percentile bootstrap intervals over items.
An item whose null and set-gender prompts differ in token count (a multi-token profession) cannot
be patched position by position, and an item whose contrast words are not single tokens for the
model (Turkish words in an English BPE vocabulary) has no one-distribution y: both are kept
unscored, counted in ``info["n_skipped"]`` and named in a warning.

The ablation check (``ablate_top_k`` > 0) mean-ablates the top-k heads (their output replaced by
its mean over the null prompts) and reruns ``templates`` and, given its data, ``crows_pairs`` on the
ablated model; it reports how the bias metrics move (paired bootstrap intervals) and the change
in language-modelling loss on neutral text. It is a **diagnostic** of what the heads carry, not a
debiasing method: the heads also do other work, and effects of heads interact (an NIE is measured
one head at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import NonNegativeInt, PositiveInt, model_validator

from audit.datafiles import brief
from audit.explain.arch import n_heads, n_layers
from audit.explain.errors import TargetError
from audit.explain.intervene import mech_spec
from audit.explain.mechanism import Patch, encode_prompts, patched_log_odds, token_id
from audit.options import BatchingOptions, MaxItemsOptions
from audit.probe import ItemProbe, ProbeError, register_probe
from audit.results import MetricInfo, MetricValue, ProbeResult
from audit.stats import CONFIDENCE, N_RESAMPLES, cluster_mean_metric, small_n_warning
from probes.ablation import ablation_check
from probes.templates import choose_sets, read_set_files, str_list, template_files

if TYPE_CHECKING:
    from audit.distributed import Dist
    from audit.models import ModelHandle

DATA_DIR = Path(__file__).parent / "data" / "mediation"
PROFESSION, PRONOUN = "[PROFESSION]", "[PRONOUN]"
GENDERS = ("male", "female")
SITE_KINDS = ("heads", "attn", "mlp")
#: why an item is kept unscored
SKIP_LENGTH = "the profession and the gendered word differ in token count (positions are patched one to one)"
SKIP_WORD = "a contrast word is not one token for this model"
WINOBIAS_FILES = {"male": "male_occupations.txt", "female": "female_occupations.txt"}

METRICS = {
    "total_effect": MetricInfo(
        "total_effect", "mean TE = y(set-gender)/y(null) − 1, y = p(anti-stereotypical)/p(stereotypical pronoun): "
        "how much swapping the profession for a gendered word moves the pronoun", ideal=None,
        higher_is_better=None, reference="Vig et al. 2020",
    ),
    "stereotype_log_ratio": MetricInfo(
        "stereotype_log_ratio", "mean log y(null) = log p(anti) − log p(stereotypical pronoun) after a profession "
        "(< 0: the stereotypical pronoun is preferred)", ideal=0.0, higher_is_better=None, unit="nats",
        reference="Vig et al. 2020",
    ),
    "top_head_nie": MetricInfo(
        "top_head_nie", "natural indirect effect of the head with the largest mean NIE", ideal=None,
        higher_is_better=None, reference="Vig et al. 2020",
    ),
    "top_k_head_share": MetricInfo(
        "top_k_head_share", "sum of the top-k heads' mean NIE divided by the mean TE (effects interact, so this "
        "can exceed 1)", ideal=None, higher_is_better=None, reference="Vig et al. 2020",
    ),
}


@dataclass(frozen=True)
class MediationSet:
    name: str
    language: str
    pronouns: dict[str, str]
    gendered_words: dict[str, str]
    professions: tuple[tuple[str, str], ...]  # (word, stereotype gender)
    templates: tuple[str, ...]
    path: str


def _gender_map(v: Any, where: str, p: Path) -> dict[str, str]:
    if not isinstance(v, dict) or set(v) != set(GENDERS):
        raise ProbeError(f"{p}: {where} must map exactly 'male' and 'female' to a word, got {brief(v)}")
    for g in GENDERS:
        if not isinstance(v[g], str) or not v[g].strip():
            raise ProbeError(f"{p}: {where}.{g} must be a non-empty string")
    return {g: v[g].strip() for g in GENDERS}


def parse_set(obj: Any, path: str | Path) -> MediationSet:
    """Validate one mediation template file; errors name the file and the field."""
    p = Path(path)
    if not isinstance(obj, dict):
        raise ProbeError(f"{p}: the top level must be a JSON object")
    for key in ("name", "language", "pronouns", "gendered_words", "professions", "templates"):
        if key not in obj:
            raise ProbeError(f"{p}: missing required field {key!r}")
    for key in ("name", "language"):
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise ProbeError(f"{p}: {key} must be a non-empty string")
    prof = obj["professions"]
    if not isinstance(prof, dict) or not set(prof) <= set(GENDERS) or not prof:
        raise ProbeError(f"{p}: professions must map 'male' / 'female' to word lists")
    professions = [(w, g) for g in GENDERS if g in prof for w in str_list(prof[g], f"professions.{g}", p)]
    templates = str_list(obj["templates"], "templates", p)
    for i, t in enumerate(templates):
        if t.count(PROFESSION) != 1 or t.count(PRONOUN) != 1 or t.index(PROFESSION) > t.index(PRONOUN):
            raise ProbeError(f"{p}: templates[{i}] needs one {PROFESSION} before one {PRONOUN}: {brief(t)}")
    return MediationSet(obj["name"].strip(), obj["language"].strip(), _gender_map(obj["pronouns"], "pronouns", p),
                        _gender_map(obj["gendered_words"], "gendered_words", p), tuple(professions),
                        tuple(templates), str(p))


def set_files(data: str | Path | None) -> list[Path]:
    """The mediation template files of ``data`` (a ``.json`` or a folder; default the project's)."""
    return template_files(data if data is not None else DATA_DIR)


def load_sets(data: str | Path | None = None) -> list[MediationSet]:
    """Read and validate every mediation template file; set names must be unique."""
    return read_set_files(set_files(data), parse_set, "mediation template JSON file")


def read_winobias_occupations(folder: str | Path) -> list[tuple[str, str]]:
    """The WinoBias occupation lists (one occupation a line) as (word, stereotype gender)."""
    d = Path(folder)
    out = []
    for g, name in WINOBIAS_FILES.items():
        f = d / name
        if not f.is_file():
            raise ProbeError(f"mediation: WinoBias occupation list {f} not found (option winobias={str(folder)!r})")
        words = [w.strip() for w in f.read_text(encoding="utf-8").splitlines() if w.strip()]
        if not words:
            raise ProbeError(f"mediation: {f} lists no occupations")
        out += [(w, g) for w in words]
    return out


def build_items(sets: list[MediationSet], winobias: list[tuple[str, str]] | None) -> pd.DataFrame:
    """One row per (set, template, profession): the null and set-gender texts (causal prompt and
    masked prompt) and the anti-stereotypical / stereotypical contrast words."""
    rows = []
    for s in sets:
        profs = [(w, g, "project") for w, g in s.professions]
        if winobias and s.language == "en":
            known = {w for w, _ in s.professions}
            profs += [(w, g, "winobias") for w, g in winobias if w not in known]
        for ti, tpl in enumerate(s.templates):
            for word, g, origin in profs:
                other = GENDERS[1 - GENDERS.index(g)]
                null, swap = tpl.replace(PROFESSION, word), tpl.replace(PROFESSION, s.gendered_words[other])
                rows.append({
                    "set": s.name, "language": s.language, "template_id": ti, "template": tpl,
                    "profession": word, "stereotype": g, "profession_source": origin,
                    "swap_word": s.gendered_words[other], "anti_word": s.pronouns[other], "stereo_word": s.pronouns[g],
                    "prompt_null": null.split(PRONOUN)[0].rstrip(), "prompt_set": swap.split(PRONOUN)[0].rstrip(),
                    "masked_null": null.replace(PRONOUN, "[MASK]"), "masked_set": swap.replace(PRONOUN, "[MASK]"),
                })
    return pd.DataFrame(rows)


def site_names(n_layers: int, n_heads: int, kinds: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """The mediators in column order: (kind, layer, head or -1)."""
    return [(k, lay, h) for k in kinds for lay in range(n_layers) for h in (range(n_heads) if k == "heads" else [-1])]


def _single_token(handle: ModelHandle, word: str) -> int:
    """The word's token id, or −1 when it is not one token for this model."""
    try:
        return token_id(handle, word)
    except TargetError:
        return -1


def score_mediation(handle: ModelHandle, items: pd.DataFrame, kinds: tuple[str, ...], *,
                    max_batch_tokens: int | None = None, progress: bool = False) -> pd.DataFrame:
    """log y for the null and set-gender prompts and, per mediator, the NIE of every item (a list
    column ``nie`` in :func:`site_names` order)."""
    out = items.copy()
    masked = handle.kind == "masked-lm"
    null, sset = (out["masked_null"], out["masked_set"]) if masked else (out["prompt_null"], out["prompt_set"])
    base, pos = encode_prompts(handle, list(null))
    source, _ = encode_prompts(handle, list(sset))
    ids = {w: _single_token(handle, w) for w in {*out["anti_word"], *out["stereo_word"]}}
    reason = [SKIP_WORD if ids[a] < 0 or ids[b] < 0 else SKIP_LENGTH if len(x) != len(y) else ""
              for a, b, x, y in zip(out["anti_word"], out["stereo_word"], base, source, strict=True)]
    out["skipped"] = reason
    out["scored"] = [r == "" for r in reason]
    L, H = n_layers(handle), n_heads(handle)
    sites = site_names(L, H, kinds)
    patches = [Patch(k, lay, head=None if h < 0 else h) for k, lay, h in sites]
    anti = np.asarray([ids[w] for w in out["anti_word"]])
    stereo = np.asarray([ids[w] for w in out["stereo_word"]])
    idx = np.flatnonzero(out["scored"].to_numpy(dtype=bool))
    n = len(out)
    log_null, log_set = np.full(n, np.nan), np.full(n, np.nan)
    nie: list[list[float] | None] = [None] * n
    if len(idx):
        run = patched_log_odds(handle, [base[i] for i in idx], [source[i] for i in idx], [pos[i] for i in idx],
                               anti[idx], stereo[idx], patches, max_batch_tokens=max_batch_tokens, progress=progress,
                               labels=[str(x) for x in null.iloc[idx]])
        log_null[idx], log_set[idx] = run.base, run.source
        eff = np.expm1(run.patched - run.base[:, None])
        for r, i in enumerate(idx):
            nie[i] = eff[r].tolist()
    out["n_tokens"] = [len(x) for x in base]
    out["log_y_null"], out["log_y_set"] = log_null, log_set
    out["total_effect"] = np.expm1(log_set - log_null)
    out["nie"] = nie
    return out


def _bootstrap_columns(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of each column's mean, items resampled (one draw shared by all columns)."""
    n = x.shape[0]
    if n < 2:
        m = x.mean(0)
        return m, m
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(N_RESAMPLES)])
    means = counts @ x / n
    a = (1 - CONFIDENCE) / 2
    lo, hi = np.quantile(means, [a, 1 - a], axis=0)
    return lo, hi


@register_probe("mediation")
class Mediation(ItemProbe):
    kinds = ("masked-lm", "causal-lm")
    metrics = METRICS
    primary_metric = "total_effect"
    needs_mask_token = True
    description = "Causal mediation analysis of gender bias per head, attention layer and MLP (Vig et al. 2020)"
    score_columns = ("log_y_null", "log_y_set")
    scored_column = "scored"
    chunk_size = 64

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        wb = (options or {}).get("winobias")
        return set_files(data) + ([Path(wb) / f for f in WINOBIAS_FILES.values()] if wb else [])

    def data_rows(self, path: Path) -> int | None:
        if path.suffix == ".txt":
            return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        return len(build_items(load_sets(path), None))

    class Options(BatchingOptions, MaxItemsOptions):
        """``sets``: set names to keep; ``winobias``: the WinoBias data folder whose occupation lists
        join the English sets; ``max_items``: a seeded random sample of N items per set; ``sites``:
        mediators (default all); ``top_k``: heads listed (and ablated with ``ablate_top_k``).
        Ablation check: ``ablate_top_k`` heads mean-ablated, ``templates`` rerun on
        ``ablation_templates`` (default the project's) and ``crows_pairs`` on
        ``ablation_crows_pairs`` (skipped when not given), each capped at ``ablation_max_items``
        items; LM loss on ``neutral_data`` (a .txt, one text a line; default the project's neutral
        sentences of the languages run)."""

        language: Literal["en", "tr", "both"] = "both"
        sets: list[str] | None = None
        winobias: str | None = None
        sites: list[Literal["heads", "attn", "mlp"]] | None = None
        top_k: NonNegativeInt = 10
        ablate_top_k: NonNegativeInt = 0
        ablation_templates: str | None = None
        ablation_crows_pairs: str | None = None
        ablation_max_items: PositiveInt | None = 300
        neutral_data: str | None = None

        @model_validator(mode="after")
        def _ablation_needs_heads(self) -> Mediation.Options:
            if self.ablate_top_k and self.sites is not None and "heads" not in self.sites:
                raise ValueError("ablate_top_k needs head mediators (sites must include 'heads')")
            return self

    def item_labels(self, items: pd.DataFrame) -> list[str]:
        return [f"{s}: {t!r}" for s, t in zip(items["set"], items["prompt_null"], strict=True)]

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        chosen = choose_sets(load_sets(data), opts, "mediation", data or DATA_DIR)
        wb = read_winobias_occupations(opts["winobias"]) if opts["winobias"] else None
        items = build_items(chosen, wb)
        if opts["max_items"] is not None:  # a seeded sample across templates and professions, file order kept
            n, rng = int(opts["max_items"]), np.random.default_rng(self.seed)
            keep = [i for _, idx in items.groupby("set", sort=False).groups.items()
                    for i in rng.choice(np.asarray(idx), size=min(n, len(idx)), replace=False)]
            items = items.loc[sorted(keep)].reset_index(drop=True)
        return items

    def prepare(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        mech_spec(handle)  # ArchitectureNotSupportedError before any scoring
        words = sorted({*items["anti_word"], *items["stereo_word"]})
        if all(_single_token(handle, w) < 0 for w in words):
            raise ProbeError(f"mediation: none of the contrast words {words} is one token for {handle.name}; "
                             "y = p(anti) / p(stereo) is read from one next-token distribution")
        return {**opts, "_kinds": tuple(opts["sites"] or SITE_KINDS), "_layers": n_layers(handle),
                "_heads": n_heads(handle)}

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        return score_mediation(handle, items, opts["_kinds"], max_batch_tokens=opts.get("max_batch_tokens"),
                               progress=progress)

    def summarise(self, items: pd.DataFrame, *, kind: str = "masked-lm", seed: int = 0,
                  opts: dict[str, Any] | None = None) -> ProbeResult:
        """TE, NIE per mediator with bootstrap CIs over items, top-k heads and the layer × head map."""
        o = opts or {}
        L, H, kinds = o["_layers"], o["_heads"], o["_kinds"]
        scored = items[items["scored"].astype(bool)].reset_index(drop=True)
        n = len(scored)
        ids = np.arange(n)
        M = METRICS
        summary: dict[str, MetricValue] = {
            "total_effect": cluster_mean_metric(M["total_effect"], scored["total_effect"].to_numpy(), ids, seed=seed),
            "stereotype_log_ratio": cluster_mean_metric(M["stereotype_log_ratio"], scored["log_y_null"].to_numpy(),
                                                        ids, seed=seed),
        }
        sites = site_names(L, H, kinds)
        nie = np.asarray(scored["nie"].tolist(), dtype=np.float64).reshape(n, len(sites))
        mean = nie.mean(0)
        lo, hi = _bootstrap_columns(nie, seed)
        warn = small_n_warning(n, "items")
        rows = [{"group_by": {"heads": "head", "attn": "attention_layer", "mlp": "mlp_layer"}[k],
                 "group": f"L{lay}.H{h}" if k == "heads" else f"L{lay}", "metric": "nie",
                 "value": mean[j], "ci_low": lo[j], "ci_high": hi[j], "n": n, "p_value": np.nan,
                 "p_adjusted": np.nan, "layer": lay, "head": h, "kind": k} for j, (k, lay, h) in enumerate(sites)]
        for lang, d in scored.groupby("language"):
            v = cluster_mean_metric(M["total_effect"], d["total_effect"].to_numpy(), np.arange(len(d)), seed=seed)
            rows.append({"group_by": "language", "group": lang, "metric": "total_effect", "value": v.value,
                         "ci_low": v.ci_low, "ci_high": v.ci_high, "n": v.n, "p_value": v.p_value,
                         "p_adjusted": np.nan, "layer": -1, "head": -1, "kind": ""})
        breakdown = pd.DataFrame(rows)
        info: dict[str, Any] = {
            "primary_metric": "total_effect",
            "n_layers": L, "n_heads": H, "sites": list(kinds), "n_items": int(len(items)), "n_scored": n,
            "n_skipped": {r: int((items["skipped"] == r).sum()) for r in (SKIP_LENGTH, SKIP_WORD)},
            "clusters": "items (template × profession)",
            "sets": sorted(items["set"].unique().tolist()),
            "professions_winobias": int((items["profession_source"] == "winobias").sum()),
            "patched_forwards": int(n * len(sites)), "patched_tokens": int(scored["n_tokens"].sum() * len(sites)),
        }
        warnings = [f"{k}: {v.warning}" for k, v in summary.items() if v.warning]
        for r, k in info["n_skipped"].items():
            if k:
                sets = sorted(items.loc[items["skipped"] == r, "set"].unique())
                warnings.append(f"{k} of {len(items)} items not scored ({', '.join(sets)}): {r}")
        if "heads" in kinds:
            hj = [j for j, s in enumerate(sites) if s[0] == "heads"]
            heat = mean[hj].reshape(L, H)
            order = sorted(hj, key=lambda j: -mean[j])[: max(1, int(o["top_k"]))]
            info["heatmap"] = {"metric": "nie", "rows": "layer", "columns": "head", "values": heat.tolist()}
            info["top_heads"] = [{"layer": sites[j][1], "head": sites[j][2], "nie": mean[j], "ci_low": lo[j],
                                  "ci_high": hi[j]} for j in order]
            top = order[0]
            summary["top_head_nie"] = MetricValue.from_info(M["top_head_nie"], float(mean[top]), ci_low=float(lo[top]),
                                                            ci_high=float(hi[top]), n=n, warning=warn,
                                                            ci_method="bootstrap percentile (items)")
            te = summary["total_effect"].value
            summary["top_k_head_share"] = MetricValue.from_info(
                M["top_k_head_share"], float(mean[order].sum() / te) if te else float("nan"), n=n, warning=warn)
        for kk in ("attn", "mlp"):
            if kk in kinds:
                info[f"{kk}_by_layer"] = [mean[j] for j, s in enumerate(sites) if s[0] == kk]
        return ProbeResult("mediation", summary, items, breakdown, warnings=warnings, info=info,
                           item_effect="total_effect", item_text=["prompt_null", "prompt_set"])

    def execute(self, handle: ModelHandle | None, data: str | Path | None, *, seed: int = 0, progress: bool = True,
                opts: dict[str, Any] | None = None, workdir: Path | None = None, dist: Dist | None = None,
                chunk_size: int | None = None) -> ProbeResult | None:
        """Score and summarise; then, on rank 0 with ``ablate_top_k`` > 0, the ablation check."""
        result = super().execute(handle, data, seed=seed, progress=progress, opts=opts, workdir=workdir, dist=dist,
                                 chunk_size=chunk_size)
        o = self.parse_options(opts or {}, data).values()
        if result is not None and handle is not None and o["ablate_top_k"] > 0:
            result.info["ablation"] = ablation_check(handle, result, o, seed=seed)
        return result
