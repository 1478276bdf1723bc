"""Template probe: the log-probability bias score (Kurita et al. 2019, "Measuring Bias in
Contextualized Word Representations", GeBNLP) for masked LMs and the log-likelihood difference of
group-swapped sentences for causal LMs, on the project's own English and Turkish templates.

Masked LMs (Kurita et al. 2019). For a template such as ``"[TARGET] is a [ATTRIBUTE]."`` filled with
target t (``he``) and attribute a (``nurse``)::

    score(t, a) = log p(t | template, t masked) − log p(t | template, t and a masked)

The second term is the prior p_prior: the target's probability when the attribute is hidden too,
so a target the model always likes (``he``) does not look biased everywhere. Multi-token targets
and attributes: every sub-token of the target is masked at once and log p(t) is the **sum of the
sub-token log-probabilities with all target sub-tokens masked**; for the prior every attribute
sub-token is masked as well (one mask per sub-token, so the length is kept). Tokens are found from
the tokenizer's character offsets (a fast tokenizer is required); a token that straddles the slot
boundary belongs to the slot.

The **effect** of an item (template × attribute × target pair (A, B)) is
``score(A, a) − score(B, a)`` in nats; the **preference** is the raw ``log p(A | template) −
log p(B | template)`` without the prior (which group word the model prefers in that context — for
Turkish "o" contexts, which gendered word it picks after the gender-neutral pronoun).

Causal LMs. Each item is a pair of group-swapped sentences S_A, S_B; the preference is
``log P(S_A) − log P(S_B)`` (Σ log P(tᵢ | t<ᵢ), BOS prepended, :func:`audit.scoring.sentence_logprob`).
The analogue of Kurita's prior normalisation: the **effect** is the preference minus its mean over
all attributes of the same set under the same template and target pair, which removes the
attribute-independent part (log P("He …") − log P("She …") whatever the occupation). For Turkish
"o" templates the target comes last, so the preference is exactly the log-likelihood difference of
the gendered continuations ("O bir mühendis. O bir" → " erkek." vs " kadın.").

Chunks. Items are scored in chunks (:class:`audit.probe.ItemProbe`: checkpointed under
``probes/templates/partial/``, sharded over ``torchrun`` ranks). Each distinct sentence (causal)
and masked query (the prior of a template and target is shared by every attribute of the same
token length) is scored once per chunk; the causal centring needs every attribute of a template
and target pair, so it runs in ``summarise`` over all chunks' items. The numbers therefore do not
depend on the chunking, up to the float rounding of a different batch composition (≤ 1e-6 nats
on the tiny test models with chunks of 7 items).

Stereotype alignment. Each attribute carries a class (``male``, ``female``, ``positive``,
``negative`` …) and ``associations`` maps a class to the group the stereotype links it with. The
**aligned effect** is ``effect`` when the attribute's class is associated with the first group, its
negation when with the second, and undefined otherwise; > 0 means the model follows the stereotype.
Because male- and female-associated attributes are balanced, the mean aligned effect is a
differential association (as WEAT's effect, Caliskan et al. 2017): a constant group preference
cancels out.

Metrics: ``stereotype_effect`` (mean aligned effect, ideal 0), ``stereotype_rate`` (% of items
with aligned effect > 0, ideal 50), ``mean_abs_effect`` (ideal 0) and ``group_preference`` (mean
preference, ideal 0). Items sharing an attribute word are correlated (the same word in several
templates and target pairs), so CIs are **cluster bootstraps over attribute words** and tests
(Wilcoxon signed-rank; sign test for the rate) run on the per-attribute means
(:func:`audit.stats.cluster_mean_metric`). The breakdown gives the same per language, category,
template set, target pair (p-values Benjamini–Hochberg-adjusted across pairs) and attribute
(clusters: target pairs). ``info["top_items"]`` lists, per target pair, the items that contribute
most (largest |aligned effect|).

Template file format (``data=`` a folder of ``*.json`` files, searched recursively, or one file;
default ``probes/data/templates/``)::

    {
      "name": "en_gender_occupations",          # unique set name
      "language": "en",                          # en, tr, … (filtered by the `language` option)
      "category": "gender",                      # breakdown key
      "groups": ["male", "female"],              # exactly two groups: A, B
      "targets": [["he", "she"], ["the man", "the woman"]],   # aligned pairs (A term, B term)
      "attributes": {"male": ["engineer", …], "female": ["nurse", …]},   # class → words
      "associations": {"male": "male", "female": "female"},  # optional; class → group.
                                                 # default: a class named like a group maps to it
      "templates": ["[TARGET] is [A/AN] [ATTRIBUTE]."],     # each with one [TARGET], one [ATTRIBUTE]
      "description": "…", "source": "…"          # optional, free text
    }

``[A/AN]`` becomes "an" before an attribute starting with a vowel letter (a, e, i, o, u), else "a"
(a spelling heuristic: "an hour" or "a university" need the article written out). A template that
starts with ``[TARGET]`` gets the target capitalised (Turkish-aware: i → İ). Malformed files raise
:class:`~audit.probe.ProbeError` naming the file and the field (e.g. ``targets[2]``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, PositiveInt

from audit import scoring
from audit.datafiles import brief, files_in, read_json
from audit.options import BatchingOptions, MaxItemsOptions
from audit.probe import ItemProbe, ProbeError, register_probe, too_long_rows
from audit.results import MetricInfo, ProbeResult
from audit.stats import cluster_mean_metric, group_breakdown
from probes.morphology_tr import capitalize_first

if TYPE_CHECKING:
    from audit.models import ModelHandle


TEMPLATE_DIR = Path(__file__).parent / "data" / "templates"
TARGET = "[TARGET]"
ATTRIBUTE = "[ATTRIBUTE]"
ARTICLE = "[A/AN]"

METRICS = {
    "stereotype_effect": MetricInfo(
        "stereotype_effect",
        "mean stereotype-aligned effect in nats: > 0 when the model links attributes with the group the "
        "stereotype names (masked: Kurita log-probability bias score; causal: centred log-likelihood difference)",
        ideal=0.0, higher_is_better=None, unit="nats", reference="Kurita et al. 2019",
    ),
    "stereotype_rate": MetricInfo(
        "stereotype_rate", "% of labelled items whose effect follows the stereotype",
        ideal=50.0, higher_is_better=None, unit="%", range=(0, 100), reference="Kurita et al. 2019",
    ),
    "mean_abs_effect": MetricInfo(
        "mean_abs_effect", "mean |effect| over all items in nats: how much the attribute moves the group "
        "preference, whatever the direction", ideal=0.0, higher_is_better=False, unit="nats",
    ),
    "group_preference": MetricInfo(
        "group_preference", "mean log p(first group's word) − log p(second group's word) in the filled "
        "template, without prior normalisation (> 0: the first group, e.g. male, is preferred)",
        ideal=0.0, higher_is_better=None, unit="nats",
    ),
}


@dataclass(frozen=True)
class TemplateSet:
    """One validated template file."""

    name: str
    language: str
    category: str
    groups: tuple[str, str]
    targets: tuple[tuple[str, str], ...]
    attributes: tuple[tuple[str, str], ...]  # (word, class)
    associations: dict[str, str]
    templates: tuple[str, ...]
    path: str


def str_list(v: Any, where: str, p: Path) -> list[str]:
    """Field ``where`` of file ``p``: a non-empty list of non-empty strings, stripped."""
    if not isinstance(v, list) or not v:
        raise ProbeError(f"{p}: {where} must be a non-empty list of strings")
    out = []
    for i, x in enumerate(v):
        if not isinstance(x, str) or not x.strip():
            raise ProbeError(f"{p}: {where}[{i}] must be a non-empty string, got {brief(x)}")
        out.append(x.strip())
    return out


def parse_template_set(obj: Any, path: str | Path) -> TemplateSet:
    """Validate one template object; errors name the file and the field."""
    p = Path(path)
    if not isinstance(obj, dict):
        raise ProbeError(f"{p}: the top level must be a JSON object, got {type(obj).__name__}")
    for key in ("name", "language", "category", "groups", "targets", "attributes", "templates"):
        if key not in obj:
            raise ProbeError(f"{p}: missing required field {key!r}")
    for key in ("name", "language", "category"):
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise ProbeError(f"{p}: {key} must be a non-empty string, got {brief(obj[key])}")
    groups = str_list(obj["groups"], "groups", p)
    if len(groups) != 2 or groups[0] == groups[1]:
        raise ProbeError(f"{p}: groups must name exactly two different groups, got {groups}")
    if not isinstance(obj["targets"], list) or not obj["targets"]:
        raise ProbeError(f"{p}: targets must be a non-empty list of [A term, B term] pairs")
    targets = []
    for i, t in enumerate(obj["targets"]):
        pair = str_list(t, f"targets[{i}]", p)
        if len(pair) != 2:
            raise ProbeError(f"{p}: targets[{i}] must have 2 terms (one per group), got {len(pair)}")
        targets.append((pair[0], pair[1]))
    attrs_obj = obj["attributes"]
    if not isinstance(attrs_obj, dict) or not attrs_obj:
        raise ProbeError(f"{p}: attributes must be an object {{class: [words]}}")
    attributes = [(w, str(cls)) for cls, words in attrs_obj.items() for w in str_list(words, f"attributes.{cls}", p)]
    assoc_obj = obj.get("associations")
    if assoc_obj is None:
        assoc = {c: c for c in attrs_obj if c in groups}
    else:
        if not isinstance(assoc_obj, dict):
            raise ProbeError(f"{p}: associations must be an object {{attribute class: group}}")
        assoc = {}
        for cls, g in assoc_obj.items():
            if cls not in attrs_obj:
                raise ProbeError(f"{p}: associations.{cls}: no attribute class {cls!r} (have {list(attrs_obj)})")
            if g not in groups:
                raise ProbeError(f"{p}: associations.{cls}: {g!r} is not one of the groups {groups}")
            assoc[str(cls)] = str(g)
    templates = str_list(obj["templates"], "templates", p)
    for i, t in enumerate(templates):
        for slot in (TARGET, ATTRIBUTE):
            if t.count(slot) != 1:
                raise ProbeError(f"{p}: templates[{i}] must contain {slot} exactly once: {brief(t)}")
    return TemplateSet(
        name=obj["name"].strip(), language=obj["language"].strip(), category=obj["category"].strip(),
        groups=(groups[0], groups[1]), targets=tuple(targets), attributes=tuple(attributes),
        associations=assoc, templates=tuple(templates), path=str(p),
    )


def template_files(data: str | Path | None) -> list[Path]:
    """The template files of ``data`` (a ``.json`` file or a folder searched recursively)."""
    return files_in(TEMPLATE_DIR if data is None else data, "*.json", "template file or folder",
                    folder="template folder", recursive=True)


def read_set_files(files: Sequence[Path], parse: Callable[[Any, Path], Any], what: str) -> list[Any]:
    """Each JSON file validated by ``parse`` (a template set, a mediation set); set names must be unique."""
    sets: list[Any] = []
    seen: dict[str, str] = {}
    for f in files:
        try:
            obj = read_json(f, what=what)
        except json.JSONDecodeError as exc:
            raise ProbeError(f"{f}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
        ts = parse(obj, f)
        if ts.name in seen:
            raise ProbeError(f"{f}: set name {ts.name!r} is already used by {seen[ts.name]}")
        seen[ts.name] = str(f)
        sets.append(ts)
    return sets


def load_template_sets(data: str | Path | None = None) -> list[TemplateSet]:
    """Read and validate every template file; set names must be unique."""
    return read_set_files(template_files(data), parse_template_set, "template set JSON file")


def choose_sets(all_sets: Sequence[Any], opts: dict[str, Any], probe: str, where: str | Path) -> list[Any]:
    """The sets of the ``language`` option (``both``: every language) named in the ``sets`` option
    (None: all); an unknown set name, or no set left, is a :class:`ProbeError` (``where``: the data)."""
    language, names = opts["language"], opts["sets"]
    chosen = [s for s in all_sets if language == "both" or s.language == language]
    if names is not None:
        unknown = sorted(set(names) - {s.name for s in all_sets})
        if unknown:
            raise ProbeError(f"{probe}: unknown set(s) {unknown}; have {[s.name for s in all_sets]}")
        chosen = [s for s in chosen if s.name in set(names)]
    if not chosen:
        raise ProbeError(f"{probe}: no template set for language {language!r} in {where}")
    return chosen


def article(word: str) -> str:
    """English indefinite article by spelling: "an" before a vowel letter, else "a"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def fill(template: str, target: str, attribute: str, language: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """The filled sentence and the character spans of the target and the attribute."""
    t = template.replace(ARTICLE, article(attribute))
    if t.startswith(TARGET):
        target = capitalize_first(target, language)
    out = ""
    spans: dict[str, tuple[int, int]] = {}
    for part in re.split(f"({re.escape(TARGET)}|{re.escape(ATTRIBUTE)})", t):
        word = {TARGET: target, ATTRIBUTE: attribute}.get(part)
        if word is not None:
            spans[part] = (len(out), len(out) + len(word))
        out += part if word is None else word
    return out, spans[TARGET], spans[ATTRIBUTE]


def build_items(sets: Sequence[TemplateSet]) -> pd.DataFrame:
    """One row per (set, template, target pair, attribute) with both filled sentences."""
    rows = []
    for s in sets:
        for ti, tpl in enumerate(s.templates):
            for ta, tb in s.targets:
                for attr, cls in s.attributes:
                    sa, ta_span, aa_span = fill(tpl, ta, attr, s.language)
                    sb, tb_span, ab_span = fill(tpl, tb, attr, s.language)
                    assoc = s.associations.get(cls)
                    sign = 1.0 if assoc == s.groups[0] else -1.0 if assoc == s.groups[1] else np.nan
                    rows.append({
                        "set": s.name, "language": s.language, "category": s.category,
                        "pair": f"{s.name}: {ta}/{tb}", "group_a": s.groups[0], "group_b": s.groups[1],
                        "target_a": ta, "target_b": tb, "attribute": attr, "attribute_class": cls,
                        "associated_group": assoc or "", "sign": sign, "template_id": ti, "template": tpl,
                        "sentence_a": sa, "sentence_b": sb,
                        "target_span_a": ta_span, "attribute_span_a": aa_span,
                        "target_span_b": tb_span, "attribute_span_b": ab_span,
                    })
    return pd.DataFrame(rows)


def _token_positions(offsets: Sequence[tuple[int, int]], span: tuple[int, int]) -> list[int]:
    """Indices of the tokens whose character range overlaps ``span`` (special tokens excluded)."""
    s0, s1 = span
    return [j for j, (a, b) in enumerate(offsets) if b > a and a < s1 and b > s0]


def kurita_scores(
    handle: ModelHandle,
    sentences: Sequence[str],
    target_spans: Sequence[tuple[int, int]],
    attribute_spans: Sequence[tuple[int, int]],
    *,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p(target | sentence, target masked) and log p(target | target and attribute masked).

    Sub-token log-probabilities are summed over all target sub-tokens (all masked at once).
    Returns (log_p_target, log_p_prior, n_target_tokens); identical queries run once."""
    tok = handle.tokenizer
    if not getattr(tok, "is_fast", False):
        raise ProbeError(f"templates needs a fast tokenizer (character offsets); {handle.name} has a slow one")
    mask_id = tok.mask_token_id
    if mask_id is None:
        raise ProbeError(f"{handle.name} has no mask token; the masked-LM template score needs one")
    enc = tok(list(sentences), return_offsets_mapping=True, add_special_tokens=True)
    queries: dict[tuple[tuple[int, ...], int, int], int] = {}
    plan: list[tuple[list[int], list[int]]] = []  # per sentence: query ids of target, of prior
    n_tok = np.zeros(len(sentences), dtype=np.int64)

    def q(seq: tuple[int, ...], pos: int, tgt: int) -> int:
        return queries.setdefault((seq, pos, tgt), len(queries))

    for i, (ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True)):
        tpos = _token_positions(offs, target_spans[i])
        apos = _token_positions(offs, attribute_spans[i])
        if not tpos or not apos or set(tpos) & set(apos):
            raise ProbeError(
                f"templates: cannot separate target and attribute tokens in {sentences[i]!r} "
                f"with {handle.name}'s tokenizer (target tokens {tpos}, attribute tokens {apos})"
            )
        scoring.check_length(handle, len(ids), f"template sentence {sentences[i]!r}")
        ts = tuple(mask_id if j in tpos else x for j, x in enumerate(ids))
        ps = tuple(mask_id if j in apos else x for j, x in enumerate(ts))
        plan.append(([q(ts, j, ids[j]) for j in tpos], [q(ps, j, ids[j]) for j in tpos]))
        n_tok[i] = len(tpos)
    keys = list(queries)
    lp = scoring.masked_token_logprobs(
        handle, [list(k[0]) for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        max_batch_tokens=max_batch_tokens, progress=progress, desc="templates (masked)",
    )
    lt = np.asarray([lp[a].sum() for a, _ in plan])
    lpr = np.asarray([lp[b].sum() for _, b in plan])
    return lt, lpr, n_tok


def score_items(
    handle: ModelHandle, items: pd.DataFrame, *, max_batch_tokens: int | None = None, progress: bool = False
) -> pd.DataFrame:
    """Add score_a/score_b and preference to an items table; for masked LMs also effect and
    aligned_effect (per item). A causal LM's effect is centred over the attributes of a template
    and target pair, so :func:`centre_causal` adds it once every item is scored.

    Each distinct sentence (causal) or masked query (masked LM: the prior of a template and
    target is shared by every attribute of the same token length) is scored once per call."""
    items = items.copy()
    n = len(items)
    if handle.kind == "masked-lm":
        sents = [*items["sentence_a"], *items["sentence_b"]]
        tsp = [*items["target_span_a"], *items["target_span_b"]]
        asp = [*items["attribute_span_a"], *items["attribute_span_b"]]
        lt, lpr, ntok = kurita_scores(handle, sents, tsp, asp, max_batch_tokens=max_batch_tokens, progress=progress)
        items["log_p_target_a"], items["log_p_target_b"] = lt[:n], lt[n:]
        items["log_p_prior_a"], items["log_p_prior_b"] = lpr[:n], lpr[n:]
        items["score_a"], items["score_b"] = lt[:n] - lpr[:n], lt[n:] - lpr[n:]
        items["n_target_tokens_a"], items["n_target_tokens_b"] = ntok[:n], ntok[n:]
        items["preference"] = items["log_p_target_a"] - items["log_p_target_b"]
        items["effect"] = items["score_a"] - items["score_b"]
    else:
        # a sentence repeated across items is one path of the prefix tree: computed once
        ll = scoring.sentence_logprob(handle, [*items["sentence_a"], *items["sentence_b"]],
                                      max_batch_tokens=max_batch_tokens, progress=progress)
        items["score_a"], items["score_b"] = ll[:n], ll[n:]
        items["preference"] = items["score_a"] - items["score_b"]
    if "effect" in items:
        items["aligned_effect"] = items["effect"] * items["sign"]
    items["set_attribute"] = items["set"] + ": " + items["attribute"]
    for c in ("target_span_a", "attribute_span_a", "target_span_b", "attribute_span_b"):
        items[c] = items[c].map(lambda s: f"{s[0]}-{s[1]}")
    return items


def centre_causal(items: pd.DataFrame) -> pd.DataFrame:
    """A causal LM's effect: the preference minus its mean over the attributes of the same set,
    template and target pair (items that were left out do not count), and the aligned effect;
    inserted after ``preference``."""
    items = items.drop(columns=["effect", "aligned_effect"], errors="ignore")
    base = items.groupby(["set", "template_id", "pair"])["preference"].transform("mean")
    at = items.columns.get_loc("preference") + 1
    items.insert(at, "effect", items["preference"] - base)
    items.insert(at + 1, "aligned_effect", items["effect"] * items["sign"])
    return items


@register_probe("templates")
class Templates(ItemProbe):
    kinds = ("masked-lm", "causal-lm")
    metrics = METRICS
    primary_metric = "stereotype_effect"
    needs_mask_token = True
    description = "Template bias score (Kurita et al. 2019; causal: swapped-sentence log-likelihood), en + tr"
    #: faults (audit.probe.ItemProbe): an item whose filled-in sentence is longer than the model's
    #: maximum, or whose scores come out NaN/inf, is left out and counted; the causal effect is
    #: centred over the items that are left
    score_columns = ("score_a", "score_b", "effect")

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        return template_files(data)

    def data_rows(self, path: Path) -> int | None:
        """A template file's rows: the items it expands to (template × target pair × attribute)."""
        return len(build_items(load_template_sets(path)))

    class Options(BatchingOptions, MaxItemsOptions):
        language: Literal["en", "tr", "both"] = Field(default="both", description="both: every language in the data")
        sets: list[str] | None = Field(default=None, description="keep only these set names")
        max_items: PositiveInt | None = Field(default=None, description="keep the first N items per set")

    def item_labels(self, items: pd.DataFrame) -> list[str]:
        return [repr(s[:60]) for s in items["sentence_a"]]

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        items = build_items(choose_sets(load_template_sets(data), opts, "templates", data or TEMPLATE_DIR))
        if opts["max_items"] is not None:
            items = items.groupby("set", sort=False).head(opts["max_items"]).reset_index(drop=True)
        return items

    def too_long(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[int, str]:
        return too_long_rows(handle, [items["sentence_a"], items["sentence_b"]], causal=handle.kind == "causal-lm")

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        return score_items(handle, items, max_batch_tokens=opts["max_batch_tokens"], progress=progress)

    def summarise(self, items: pd.DataFrame, *, kind: str = "masked-lm", seed: int = 0,
                  opts: dict[str, Any] | None = None) -> ProbeResult:
        """Metrics from a scored items table (every chunk's items; causal LMs: centred here)."""
        masked = kind != "causal-lm"
        if not masked:
            items = centre_causal(items)
        M = METRICS

        def lab(df: pd.DataFrame) -> pd.DataFrame:
            return df[df["sign"].notna()]

        fns: dict[str, Any] = {
            "stereotype_effect": lambda df, c: cluster_mean_metric(
                M["stereotype_effect"], lab(df)["aligned_effect"].to_numpy(), lab(df)[c].to_numpy(), seed=seed),
            "stereotype_rate": lambda df, c: cluster_mean_metric(
                M["stereotype_rate"], (lab(df)["aligned_effect"] > 0).to_numpy(float), lab(df)[c].to_numpy(),
                seed=seed, test="sign", null=0.5, scale=100.0),
            "mean_abs_effect": lambda df, c: cluster_mean_metric(
                M["mean_abs_effect"], df["effect"].to_numpy(), df[c].to_numpy(), seed=seed, test="none",
                transform=np.abs),
            "group_preference": lambda df, c: cluster_mean_metric(
                M["group_preference"], df["preference"].to_numpy(), df[c].to_numpy(), seed=seed),
        }
        summary = {name: fn(items, "set_attribute") for name, fn in fns.items()}
        by_attribute = {name: partial(fns[name], c="set_attribute") for name in ("stereotype_effect", "group_preference")}
        parts = [group_breakdown(items, by, by_attribute) for by in ("language", "category", "set", "pair")]
        parts.append(group_breakdown(items, "set_attribute", {
            "stereotype_effect": partial(fns["stereotype_effect"], c="pair")}))
        breakdown = pd.concat(parts, ignore_index=True)
        warnings = [f"{k}: {v.warning}" for k, v in summary.items() if v.warning]
        effect_col = "aligned_effect" if items["sign"].notna().any() else "effect"
        top: dict[str, list[dict[str, Any]]] = {}
        for pair, d in items.groupby("pair", sort=True):
            d = d.reindex(d[effect_col].abs().sort_values(ascending=False).index).head(3)
            top[str(pair)] = [{"sentence_a": r.sentence_a, "sentence_b": r.sentence_b,
                               "effect": float(getattr(r, effect_col))} for r in d.itertuples()]
        return ProbeResult(
            "templates", summary, items, breakdown, warnings=warnings,
            item_effect=effect_col, item_text=["sentence_a", "sentence_b"],
            info={
                "primary_metric": "stereotype_effect",
                "scoring": "Kurita log-probability bias score (masked LM)" if masked
                else "log-likelihood difference of group-swapped sentences, centred per template and pair (causal LM)",
                "sets": sorted(items["set"].unique().tolist()),
                "languages": sorted(items["language"].unique().tolist()),
                "n_items": int(len(items)),
                "clusters": "attribute words (set: attribute)",
                "top_items": top,
            },
        )
