"""The mediation probe's ablation check: mean-ablate the top-k mediating heads, rerun bias probes
and measure what the ablation costs in language modelling.

A **diagnostic**, not a debiasing method. If the heads that mediate the profession → pronoun
effect (Vig et al. 2020) carry the bias the other probes measure, ablating them moves those
metrics; the neutral-text loss says how much else the heads do. Mean-ablation (each head's output
replaced by its mean over the mediation prompts, at every token) keeps the activation on the
model's usual scale, unlike zero-ablation (Heimersheim & Nanda 2024 discuss the choice).

Changes are paired (same items before and after): the change of ``templates``' stereotype effect
has a cluster bootstrap over attribute words, CrowS-Pairs' change a bootstrap over pairs, the loss
change a bootstrap over the neutral texts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from audit import scoring
from audit.explain.mechanism import MASK, ablate_heads, mean_head_outputs
from audit.probe import ProbeError, get_probe
from audit.results import MetricInfo, MetricValue, ProbeResult
from audit.stats import bootstrap_ci, cluster_mean_metric

if TYPE_CHECKING:
    from audit.models import ModelHandle

NEUTRAL = {"en": Path(__file__).parent / "data" / "mediation" / "neutral_en.txt",
           "tr": Path(__file__).parent / "data" / "mediation" / "neutral_tr.txt"}
DIAGNOSTIC = ("diagnostic, not a debiasing method: the ablated heads also do other work, and heads interact "
              "(each NIE was measured one head at a time)")

CHANGE = {
    "templates": MetricInfo("stereotype_effect_change", "templates' stereotype effect after − before ablation "
                            "(paired per item; nats)", ideal=None, unit="nats"),
    "crows_pairs": MetricInfo("pct_stereotype_change", "CrowS-Pairs % stereotype preferred after − before ablation "
                              "(paired per pair)", ideal=None, unit="points"),
    "loss": MetricInfo("neutral_loss_change", "mean per-token negative log-likelihood on neutral text after − "
                       "before ablation (masked LMs: pseudo-log-likelihood)", ideal=0.0, unit="nats/token"),
}


def neutral_texts(path: str | Path | None, languages: list[str]) -> list[str]:
    files = [Path(path)] if path else [NEUTRAL[lang] for lang in languages if lang in NEUTRAL]
    texts: list[str] = []
    for f in files:
        if not f.is_file():
            raise ProbeError(f"mediation: neutral text file {f} not found (option neutral_data)")
        texts += [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ProbeError(f"mediation: no neutral texts in {', '.join(map(str, files)) or 'any file'}")
    return texts


def token_losses(handle: ModelHandle, texts: list[str], max_batch_tokens: int | None = None) -> np.ndarray:
    """Mean negative log-likelihood per token of each text (causal: Σ log P(tᵢ | t<ᵢ) with BOS; masked:
    pseudo-log-likelihood, Salazar et al. 2020)."""
    if handle.kind == "causal-lm":
        ll = scoring.sentence_logprob(handle, texts, max_batch_tokens=max_batch_tokens)
        n = np.asarray([len(s) - 1 for s in scoring.causal_tokenize(handle, texts)])
        return -np.asarray(ll) / np.maximum(n, 1)
    ids = handle.tokenizer(texts, add_special_tokens=True)["input_ids"]
    pll = scoring.pseudo_log_likelihood(handle, ids, max_batch_tokens=max_batch_tokens)
    return np.asarray([-float(np.mean(p)) for p in pll])


def _paired(before: ProbeResult, after: ProbeResult, metric: str, info: MetricInfo, diff: MetricValue) -> dict[str, Any]:
    return {"metric": metric, "before": before.summary[metric].to_dict(), "after": after.summary[metric].to_dict(),
            "change": diff.to_dict(), "change_metric": info.name}


def ablation_check(handle: ModelHandle, result: ProbeResult, opts: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """Mean-ablate the ``ablate_top_k`` heads of ``result.info["top_heads"]`` and report the change
    of the templates (and CrowS-Pairs) bias metrics and of the neutral-text loss."""
    k = int(opts["ablate_top_k"])
    heads = [(int(t["layer"]), int(t["head"])) for t in result.info["top_heads"][:k]]
    if len(heads) < k:
        raise ProbeError(f"mediation: ablate_top_k={k} but only {len(heads)} heads are listed; raise top_k")
    items = result.items[result.items["scored"].astype(bool)]
    masked = handle.kind == "masked-lm"
    prompts = [t.replace(MASK, handle.tokenizer.mask_token) for t in items["masked_null"]] if masked \
        else list(items["prompt_null"])
    mbt = opts.get("max_batch_tokens")
    means = mean_head_outputs(handle, prompts, heads, max_batch_tokens=mbt)
    languages = sorted(items["language"].unique().tolist())
    out: dict[str, Any] = {"heads": [{"layer": lay, "head": h} for lay, h in heads], "ablation": "mean over the "
                           f"{len(prompts)} null prompts", "note": DIAGNOSTIC, "probes": {}}
    kw: dict[str, Any] = {"seed": seed, "progress": False, "max_items": opts.get("ablation_max_items"), "max_batch_tokens": mbt}

    tpl = get_probe("templates")
    language = languages[0] if len(languages) == 1 else "both"
    before = tpl.run(handle, opts.get("ablation_templates"), language=language, **kw)
    with ablate_heads(handle, means):
        after = tpl.run(handle, opts.get("ablation_templates"), language=language, **kw)
    keys = ["set", "template_id", "pair", "attribute"]
    m = before.items[[*keys, "set_attribute", "aligned_effect"]].merge(
        after.items[[*keys, "aligned_effect"]], on=keys, suffixes=("_before", "_after"))
    diff = cluster_mean_metric(CHANGE["templates"], (m["aligned_effect_after"] - m["aligned_effect_before"]).to_numpy(),
                               m["set_attribute"].to_numpy(), seed=seed)
    out["probes"]["templates"] = _paired(before, after, "stereotype_effect", CHANGE["templates"], diff)

    if opts.get("ablation_crows_pairs"):
        cp = get_probe("crows_pairs")
        before = cp.run(handle, opts["ablation_crows_pairs"], **kw)
        with ablate_heads(handle, means):
            after = cp.run(handle, opts["ablation_crows_pairs"], **kw)
        m = pd.merge(before.items[["sent_more", "sent_less", "stereo_preferred"]],
                     after.items[["sent_more", "sent_less", "stereo_preferred"]], on=["sent_more", "sent_less"],
                     suffixes=("_before", "_after"))
        d = (m["stereo_preferred_after"].astype(float) - m["stereo_preferred_before"].astype(float)).to_numpy()
        diff = cluster_mean_metric(CHANGE["crows_pairs"], d, np.arange(len(d)), seed=seed, scale=100.0)
        out["probes"]["crows_pairs"] = _paired(before, after, cp.primary_metric, CHANGE["crows_pairs"], diff)

    texts = neutral_texts(opts.get("neutral_data"), languages)
    lb = token_losses(handle, texts, mbt)
    with ablate_heads(handle, means):
        la = token_losses(handle, texts, mbt)
    ci = bootstrap_ci(la - lb, seed=seed)
    out["neutral_loss"] = {"before": float(lb.mean()), "after": float(la.mean()),
                           "change": MetricValue.from_info(CHANGE["loss"], float((la - lb).mean()), ci_low=ci.low,
                                                           ci_high=ci.high, n=len(texts), ci_method=ci.method).to_dict(),
                           "n_texts": len(texts)}
    return out
