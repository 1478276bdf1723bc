"""What a report says around the numbers: dataset caveats from the literature and the mapping
from results to the regulatory provisions they are evidence for.

This is reference text, keyed by the probe's registry name; it never holds a metric's ideal or
direction (those come from the stored :class:`~audit.results.MetricValue`). A probe that is not
listed here still gets the generic caveats and the generic bias-evidence mapping.
"""

from __future__ import annotations

from typing import Any

DISCLAIMER = (
    "This report is evidence produced by an automated audit. It is not a certification, a "
    "conformity assessment or legal advice: whether it is sufficient for a given obligation is "
    "for the provider, the deployer and, where applicable, a notified body to decide."
)

#: Hub ids of the demo models' full-precision originals (the model card's ``base_model``)
DEMO_BASE_MODELS = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
}

#: probe registry name → (dataset name, Hugging Face dataset id or None when the data ship with
#: this project or have no Hub copy) for the model card's ``model-index`` and ``datasets``
PROBE_DATASETS: dict[str, tuple[str, str | None]] = {
    "crows_pairs": ("CrowS-Pairs", "nyu-mll/crows_pairs"),
    "stereoset": ("StereoSet", "McGill-NLP/stereoset"),
    "bold": ("BOLD", "AmazonScience/bold"),
    "bbq": ("BBQ", None),
    "seat": ("SEAT (May et al. 2019)", None),
    "templates": ("transformer-audit templates", None),
    "counterfactual": ("transformer-audit counterfactual swaps", None),
    "classifier_fairness": ("classifier fairness data", None),
    "representation": ("transformer-audit gender terms", None),
    "seegull": ("SeeGULL", None),
    "ethnic_bias": ("Ethnic bias templates (Ahn & Oh 2021)", None),
    "xweat": ("XWEAT", None),
    "mediation": ("WinoBias occupations", None),
    "privacy": ("transformer-audit privacy prompts", None),
}

#: model kind → Hugging Face pipeline task (``model-index`` task type)
KIND_TASKS = {"causal-lm": "text-generation", "masked-lm": "fill-mask", "encoder": "feature-extraction",
              "classifier": "text-classification"}

#: caveats that hold for every audit
GENERAL_CAVEATS: list[dict[str, str]] = [
    {
        "topic": "Scope of bias probes",
        "text": "Each probe measures one operationalisation of bias on one dataset. A result near "
                "the ideal is not evidence that the model is free of bias in a deployment; intrinsic "
                "measures (likelihoods, embeddings) need not agree with harms in downstream use.",
        "source": "Goldfarb-Tarrant et al. 2021, Intrinsic Bias Metrics Do Not Correlate with "
                  "Application Bias (ACL); Blodgett et al. 2020, Language (Technology) is Power (ACL)",
    },
    {
        "topic": "Explanations",
        "text": "Attribution scores and attention weights describe the model's computation under "
                "the chosen method, baseline and target; different methods disagree, and attention "
                "weights alone are not explanations. Read them together with their faithfulness "
                "metrics.",
        "source": "Jain & Wallace 2019, Attention is not Explanation (NAACL); DeYoung et al. 2020, "
                  "ERASER (ACL)",
    },
]

QUANTIZED_CAVEAT = {
    "topic": "Quantized demo model",
    "text": "The audited model's weights come from a 4-bit quantized GGUF file (the demo models "
            "ship as Q4_1 / Q4_K_M) dequantized to floating point on load. Its scores can differ "
            "from the full-precision original; do not read them as results for that original.",
    "source": "transformer-audit docs/architecture.md, 'Demo models'",
}

#: dataset / method caveats per probe registry name
PROBE_CAVEATS: dict[str, list[dict[str, str]]] = {
    "crows_pairs": [{
        "topic": "CrowS-Pairs data quality",
        "text": "Many CrowS-Pairs pairs have conceptualisation or operationalisation problems "
                "(pairs that do not contrast the named groups, non-minimal edits, unclear "
                "stereotypes), which adds noise to the metric; small deviations from 50 % should "
                "not be over-read. The pairs reflect US-centric stereotypes.",
        "source": "Blodgett et al. 2021, Stereotyping Norwegian Salmon: An Inventory of Pitfalls "
                  "in Fairness Benchmark Datasets (ACL); Nangia et al. 2020 (EMNLP)",
    }],
    "stereoset": [{
        "topic": "StereoSet data quality",
        "text": "StereoSet items share the pitfalls found in CrowS-Pairs (ambiguous targets, "
                "incoherent or non-stereotypical 'stereotype' options). Only the public dev split "
                "is available; the official test labels are hidden.",
        "source": "Blodgett et al. 2021 (ACL); Nadeem et al. 2021, StereoSet (ACL)",
    }],
    "seat": [{
        "topic": "SEAT validity",
        "text": "SEAT inserts words into semantically bleached templates; results vary with the "
                "templates and the pooling, and a small effect size is not evidence of no bias.",
        "source": "May et al. 2019, On Measuring Social Biases in Sentence Encoders (NAACL)",
    }],
    "templates": [{
        "topic": "Project templates",
        "text": "The template probe uses this project's own English and Turkish templates and word "
                "lists; they have not been validated by an external annotation study.",
        "source": "Kurita et al. 2019, Measuring Bias in Contextualized Word Representations",
    }],
    "counterfactual": [{
        "topic": "Counterfactual swaps",
        "text": "Swap lists (names, pronouns, group nouns) are incomplete, and names are weak "
                "proxies for demographic groups; flips measure sensitivity to the listed terms only.",
        "source": "Garg et al. 2019, Counterfactual Fairness in Text Classification (AIES)",
    }],
    "bbq": [{
        "topic": "BBQ coverage",
        "text": "BBQ is template-generated and covers social contexts and stereotypes attested "
                "in US English; answer choice by likelihood can differ from a model's free answers.",
        "source": "Parrish et al. 2022, BBQ (Findings of ACL)",
    }],
    "bold": [{
        "topic": "BOLD scoring",
        "text": "BOLD prompts come from Wikipedia; the lexicon-based VADER sentiment scorer is a "
                "coarse proxy that misses context, sarcasm and group-specific language.",
        "source": "Dhamala et al. 2021, BOLD (FAccT); Hutto & Gilbert 2014, VADER (ICWSM)",
    }],
    "classifier_fairness": [{
        "topic": "Group fairness criteria",
        "text": "Demographic parity, equalized odds and calibration cannot in general hold at once; "
                "which gap matters depends on the decision the classifier supports.",
        "source": "Kleinberg et al. 2017 (ITCS); Chouldechova 2017 (Big Data); Borkan et al. 2019",
    }],
    "representation": [{
        "topic": "Probing classifiers",
        "text": "A linear probe that predicts a protected attribute shows the information is "
                "decodable from a layer, not that the model uses it; compare with the control task.",
        "source": "Hewitt & Liang 2019, Designing and Interpreting Probes with Control Tasks (EMNLP); "
                  "Belinkov 2022 (Computational Linguistics)",
    }],
    "ethnic_bias": [{
        "topic": "Categorical bias templates",
        "text": "The CB score depends on the templates and the attribute list (occupations and a few "
                "criminal or pejorative nouns); the Turkish templates are the authors' translations and "
                "some are ungrammatical. The score says how unevenly nationalities are predicted, not "
                "which direction is harmful.",
        "source": "Ahn & Oh 2021, Mitigating Language-Dependent Ethnic Bias in BERT (EMNLP)",
    }],
    "seegull": [{
        "topic": "SeeGULL annotations",
        "text": "Each (identity, attribute) pair was judged by three annotators in Turkey; one vote "
                "makes a pair a candidate stereotype, so read the agreement strata. Some identities "
                "are languages or regions, and the likelihood preference depends on the templates.",
        "source": "Bhutani et al. 2024, SeeGULL Multilingual (ACL 2024, short papers)",
    }],
    "xweat": [{
        "topic": "Machine-translated WEAT lists",
        "text": "XWEAT's Turkish word lists are translations with known errors (first names rendered as "
                "common nouns, several English words merged into one Turkish word); flagged words are "
                "left out, and the English and Turkish sets are compared on the words kept.",
        "source": "Lauscher & Glavaš 2019, Are We Consistently Biased? (*SEM)",
    }],
    "mediation": [{
        "topic": "Mediation heat maps",
        "text": "Indirect effects are measured one component at a time on the project's templates; a "
                "large effect shows a component carries the gender signal there, not that it is the "
                "mechanism (components interact), and the ablation check is a diagnostic, not a "
                "debiasing method.",
        "source": "Vig et al. 2020, Investigating Gender Bias in Language Models Using Causal "
                  "Mediation Analysis (NeurIPS); Heimersheim & Nanda 2024",
    }],
}

#: provisions a result can be evidence for
PROVISIONS: dict[str, dict[str, str]] = {
    "art10": {
        "framework": "EU AI Act (Regulation (EU) 2024/1689)",
        "provision": "Art. 10(2)(f)–(g)",
        "how": "supports documenting the examination for possible biases likely to lead to "
               "discrimination, and the measures to detect them (the audit tests model behaviour; "
               "it does not examine the training data itself)",
    },
    "art13": {
        "framework": "EU AI Act (Regulation (EU) 2024/1689)",
        "provision": "Art. 13(3)(b)",
        "how": "supports the information given to deployers on characteristics and limitations of "
               "performance, including information relevant to explain and interpret the output",
    },
    "art15": {
        "framework": "EU AI Act (Regulation (EU) 2024/1689)",
        "provision": "Art. 15(1), (3)",
        "how": "supports declaring measured levels and the metrics used, with their uncertainty and "
               "the thresholds they were judged against",
    },
    "annex4": {
        "framework": "EU AI Act (Regulation (EU) 2024/1689)",
        "provision": "Annex IV (points 1 and 2(g))",
        "how": "contributes to the technical documentation: versions, validation and testing "
               "procedures and data, metrics for potentially discriminatory impacts, dated test logs",
    },
    "measure29": {
        "framework": "NIST AI RMF 1.0",
        "provision": "MEASURE 2.9",
        "how": "documents how the model was explained and how far the explanations can be trusted",
    },
    "measure211": {
        "framework": "NIST AI RMF 1.0",
        "provision": "MEASURE 2.11",
        "how": "documents that fairness and bias were evaluated, and the results",
    },
}


def evidence_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per result in the report: what it measures and what it is evidence for."""

    def prov(*keys: str) -> list[dict[str, str]]:
        return [dict(PROVISIONS[k]) for k in keys]

    rows: list[dict[str, Any]] = [{
        "result": f"Bias probe {p['name']}",
        "section": f"probe-{p['name']}",
        "measures": f"{p['probe']} metrics ({', '.join(m['name'] for m in p['metrics'][:6]) or 'no metrics'}) "
                    "with 95 % CIs, per-category breakdown and item-level scores",
        "evidence_for": prov("art10", "measure211", "annex4"),
    } for p in doc["probes"]]
    rows += [{
        "result": f"Explanations {e['name']}",
        "section": f"explain-{e['name']}",
        "measures": f"token attributions ({', '.join(e['methods']) or 'no methods'}) and their "
                    "faithfulness metrics",
        "evidence_for": prov("art13", "measure29", "annex4"),
    } for e in doc["explainers"]]
    if doc.get("verdict"):
        rows.append({
            "result": "Policy verdict",
            "section": "verdict",
            "measures": "each metric judged against the policy's threshold, on the value or its CI",
            "evidence_for": prov("art15", "annex4"),
        })
    rows += [{
        "result": "Model, data and run identity",
        "section": "identity",
        "measures": "weight and dataset SHA-256 hashes, configuration, versions, seed, hardware, timings",
        "evidence_for": prov("annex4"),
    }, {
        "result": "Limitations",
        "section": "limitations",
        "measures": "known limits of the datasets, methods and model build; missing results",
        "evidence_for": prov("art13"),
    }]
    return rows
