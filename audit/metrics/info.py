"""Self-describing interpretability metrics (ferret style): each declares its direction and best value.

Reports and the dashboard colour a number from this metadata; nobody hard-codes it twice.
"""

from __future__ import annotations

from audit.registry import UnknownNameError
from audit.results import MetricInfo

_INF = float("inf")

#: how these numbers differ from ferret's (Attanasio et al. 2023) — never compare the two as equal
_NOT_FERRET = (" Not ferret's number: here k % of n tokens is ⌈k·n⌉ tokens ranked by signed score (negative "
               "ones included), removed by replacing them with the baseline token (or [MASK]) so positions "
               "stay; ferret takes ⌊k·n⌋ tokens among the positive scores only and deletes them.")

METRICS: dict[str, MetricInfo] = {m.name: m for m in [
    MetricInfo("completeness_gap", "|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)| of Integrated "
               "Gradients; above 5 % the attributions do not add up to the prediction change",
               ideal=0.0, higher_is_better=False, range=(0.0, _INF),
               reference="Sundararajan, Taly & Yan 2017 (completeness axiom)"),
    MetricInfo("comprehensiveness", "f(x) − f(x without its top-k % tokens), at k = 10 %…100 %: how much the "
               "prediction drops when the most important tokens are removed" + _NOT_FERRET, ideal=None,
               higher_is_better=True,
               reference="DeYoung et al. 2020, ERASER"),
    MetricInfo("comprehensiveness_aopc", "comprehensiveness averaged over the bins (AOPC)." + _NOT_FERRET, ideal=None,
               higher_is_better=True, reference="DeYoung et al. 2020, ERASER; Samek et al. 2017"),
    MetricInfo("sufficiency", "f(x) − f(only the top-k % tokens kept), at k = 10 %…100 %: how well the most "
               "important tokens alone keep the prediction" + _NOT_FERRET, ideal=0.0, higher_is_better=False,
               reference="DeYoung et al. 2020, ERASER"),
    MetricInfo("sufficiency_aopc", "sufficiency averaged over the bins (AOPC)." + _NOT_FERRET, ideal=0.0,
               higher_is_better=False,
               reference="DeYoung et al. 2020, ERASER"),
    MetricInfo("deletion", "f after removing the top fraction k of tokens (a deletion-curve point)", ideal=None,
               higher_is_better=False, reference="Petsiuk, Das & Saenko 2018, RISE"),
    MetricInfo("insertion", "f with only the top fraction k of tokens restored (an insertion-curve point)",
               ideal=None, higher_is_better=True, reference="Petsiuk, Das & Saenko 2018, RISE"),
    MetricInfo("deletion_auc", "area under f as the most important tokens are removed one by one (fraction of "
               "tokens on the x axis); lower means the attribution finds what the model needs",
               ideal=None, higher_is_better=False, reference="Petsiuk, Das & Saenko 2018, RISE"),
    MetricInfo("insertion_auc", "area under f as the most important tokens are restored one by one into the "
               "baseline input; higher is better", ideal=None, higher_is_better=True,
               reference="Petsiuk, Das & Saenko 2018, RISE"),
    MetricInfo("tau_loo", "Kendall τ between attributions and leave-one-out effects f(x) − f(x∖i), token i "
               "replaced by the baseline token (or [MASK]); ferret's taucorr_loo deletes the token instead, so "
               "the two differ",
               ideal=1.0, higher_is_better=True, range=(-1.0, 1.0),
               reference="Jain & Wallace 2019; ferret (Attanasio et al. 2023) taucorr_loo"),
    MetricInfo("infidelity", "E[(Iᵀ·attr − (f(x) − f(x − I)))²] under Gaussian token perturbations I, with the "
               "attribution rescaled optimally (Captum infidelity, normalize=True)", ideal=0.0,
               higher_is_better=False, range=(0.0, _INF), reference="Yeh et al. 2019, On the (In)fidelity and "
               "Sensitivity of Explanations"),
    MetricInfo("sensitivity_max", "largest change (Frobenius norm) of the attribution under perturbations of "
               "radius r in token space (Captum sensitivity_max)", ideal=0.0, higher_is_better=False,
               range=(0.0, _INF), reference="Yeh et al. 2019"),
    MetricInfo("rank_spearman", "Spearman ρ between two methods' token attributions (|score|)", ideal=1.0,
               higher_is_better=True, range=(-1.0, 1.0), reference="Krishna et al. 2022, The Disagreement Problem"),
    MetricInfo("rank_kendall", "Kendall τ between two methods' token attributions (|score|)", ideal=1.0,
               higher_is_better=True, range=(-1.0, 1.0), reference="Krishna et al. 2022"),
    MetricInfo("topk_overlap", "share of the top-k tokens (|score|) two methods have in common", ideal=1.0,
               higher_is_better=True, range=(0.0, 1.0), reference="Krishna et al. 2022 (feature agreement)"),
    MetricInfo("attention_entropy", "mean entropy of a head's attention distributions over the query tokens",
               ideal=None, higher_is_better=None, unit="nats", reference="Clark et al. 2019, What Does BERT Look At?"),
    MetricInfo("attention_entropy_normalized", "attention entropy divided by log(number of visible tokens): 0 = "
               "one token, 1 = uniform", ideal=None, higher_is_better=None, range=(0.0, 1.0),
               reference="Clark et al. 2019"),
    MetricInfo("plausibility_auprc", "area under the precision–recall curve of attributions against human "
               "rationale tokens", ideal=1.0, higher_is_better=True, range=(0.0, 1.0),
               reference="DeYoung et al. 2020, ERASER"),
    MetricInfo("plausibility_token_f1", "token F1 of the top-|rationale| tokens against human rationale tokens",
               ideal=1.0, higher_is_better=True, range=(0.0, 1.0), reference="DeYoung et al. 2020, ERASER"),
]}


def metric_info(name: str) -> MetricInfo:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownNameError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}") from None
