"""Interventions, logit lens, activation patching and the mediation probe (issue 20).

The planted-mechanism model is a tiny GPT-2 with a word-level tokenizer whose attention output
projections are zero for every head but one (layer 1, head 2) and stay zero while it is trained on
"the <profession> said that <pronoun>" sentences: that head is the only path from the profession to
the pronoun, so mediation and patching must rank it first.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.explain.arch import ArchitectureNotSupportedError, blocks
from audit.explain.errors import TargetError
from audit.explain.intervene import intervene
from audit.explain.mechanism import (
    Patch,
    activation_patching,
    encode_prompts,
    logit_lens,
    patched_log_odds,
    token_id,
)
from audit.models import load_model

PLANTED = (1, 2)
WORDS = ["the", "man", "woman", "nurse", "secretary", "engineer", "pilot", "said", "that", "ate", "because",
         "he", "she", "was", "tired", "hungry", "."]
#: profession → p(he) in training: the planted stereotype
P_HE = {"man": 1.0, "woman": 0.0, "nurse": 0.1, "secretary": 0.2, "engineer": 0.9, "pilot": 0.8}
TEMPLATES = ["the [P] said that", "the [P] ate because"]


def _word_tokenizer(folder: Path):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", "[MASK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=64)
    fast.save_pretrained(folder)
    return fast


def build_planted_gpt2(folder: Path, steps: int = 300, seed: int = 0) -> Path:
    """Train a 2-layer GPT-2 whose only cross-position path is head PLANTED (other heads' rows of
    the output projection are zero and their gradients masked)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = _word_tokenizer(folder)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    dh = 32 // 4
    for li, block in enumerate(model.transformer.h):
        keep = torch.zeros(32, 1)
        if li == PLANTED[0]:
            keep[PLANTED[1] * dh:(PLANTED[1] + 1) * dh] = 1.0
        with torch.no_grad():
            block.attn.c_proj.weight.mul_(keep)  # Conv1D weight: (in = concatenated heads, out)
        block.attn.c_proj.weight.register_hook(lambda g, k=keep: g * k)
    prompts = [t.replace("[P]", w) for t in TEMPLATES for w in P_HE]
    ids = torch.tensor([[tok.bos_token_id, *tok(p, add_special_tokens=False)["input_ids"]] for p in prompts])
    he, she = tok.convert_tokens_to_ids("he"), tok.convert_tokens_to_ids("she")
    q = torch.tensor([P_HE[p.split()[1]] for p in prompts])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        lp = torch.log_softmax(model(ids).logits[:, -1], -1)
        loss = -(q * lp[:, he] + (1 - q) * lp[:, she]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_model(build_planted_gpt2(tmp_path_factory.mktemp("planted")), device="cpu")


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory: pytest.TempPathFactory, llama_path: Path):  # type: ignore[no-untyped-def]
    """A tiny Gemma 3 text model with the tiny Llama's tokenizer, loaded through the real loader."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    d = tmp_path_factory.mktemp("gemma3")
    for f in llama_path.iterdir():
        if "token" in f.name:
            shutil.copy(f, d / f.name)
    tok = AutoTokenizer.from_pretrained(d)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=128,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=0,
                           sliding_window=16)
    Gemma3ForCausalLM(cfg).eval().save_pretrained(d)
    return load_model(d, device="cpu")


ARCHS = ["bert_mlm", "roberta_mlm", "gpt2", "llama", "gemma3"]


def _prompt(handle) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    if handle.kind == "masked-lm":
        return "the man said that [MASK] was tired .", "the woman said that [MASK] was tired ."
    return "the man said that", "the woman said that"


def _pair(handle) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Two contrast words that are single tokens in the tiny vocabularies."""
    for a, b in ((" man", " the"), ("man", "the")):
        try:
            token_id(handle, a), token_id(handle, b)
            return a, b
        except TargetError:
            continue
    raise AssertionError("no single-token pair")


# ------------------------------------------------------------------------------------ intervene


@pytest.mark.parametrize("arch", ARCHS)
def test_residual_reads_are_the_hidden_states(arch: str, request: pytest.FixtureRequest) -> None:
    """The residual read after block ℓ equals hidden_states[ℓ + 1] of the model's own output
    (except the last, which HF returns after the final norm for pre-LN decoders)."""
    h = request.getfixturevalue(arch)
    seqs, _ = encode_prompts(h, [_prompt(h)[0]])
    ids = torch.tensor(seqs)
    L = len(blocks(h))
    with torch.inference_mode(), intervene(h, read=[("resid", i) for i in range(L)]) as acts:
        hs = h.model(input_ids=ids, output_hidden_states=True).hidden_states
    for i in range(L - 1):
        torch.testing.assert_close(acts[("resid", i)], hs[i + 1])
    assert not torch.equal(acts[("resid", 0)], acts[("resid", 1)])


@pytest.mark.parametrize("arch", ARCHS)
def test_zeroing_one_head_equals_zeroing_its_output_projection_columns(arch: str, request: pytest.FixtureRequest) -> None:
    """Writing zeros into head 1 of layer 0 through the hook gives the same logits as zeroing the
    weights of the output projection that read head 1 — so the hook splits heads correctly."""
    from audit.explain.arch import _get, arch_spec

    h = request.getfixturevalue(arch)
    ids = torch.tensor(encode_prompts(h, [_prompt(h)[0]])[0])

    def zero_head(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[..., 1, :] = 0
        return x

    with torch.inference_mode():
        ref = h.model(input_ids=ids).logits
        with intervene(h, write={("heads", 0): zero_head}):
            hooked = h.model(input_ids=ids).logits
        proj = _get(blocks(h)[0], arch_spec(h).out_proj)
        w = proj.weight
        saved = w.detach().clone()
        d = (w.shape[0] if type(proj).__name__ == "Conv1D" else w.shape[1]) // 4
        if type(proj).__name__ == "Conv1D":  # GPT-2: (in, out)
            w[d:2 * d, :] = 0
        else:  # nn.Linear: (out, in)
            w[:, d:2 * d] = 0
        zeroed = h.model(input_ids=ids).logits
        w.copy_(saved)
    torch.testing.assert_close(hooked, zeroed)
    assert not torch.allclose(hooked, ref)


def test_unknown_architecture_is_refused(gpt2, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(gpt2.model.config, "model_type", "opt")
    with pytest.raises(ArchitectureNotSupportedError, match="'opt'"):
        logit_lens(gpt2, ["the man"], " man", " the")


def test_classifier_is_refused(bert_classifier) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ArchitectureNotSupportedError, match="classifier"):
        encode_prompts(bert_classifier, ["the man [MASK]"])


def test_bad_prompts_and_words_are_named(gpt2, bert_mlm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TargetError, match="exactly once"):
        encode_prompts(bert_mlm, ["no mask here"])
    with pytest.raises(TargetError, match="tokens"):
        token_id(gpt2, " hippopotamus")
    with pytest.raises(TargetError, match="same number of tokens"):
        activation_patching(gpt2, ["the man said that"], ["the a"], " man", " the")


# ------------------------------------------------------------------------------------ logit lens


@pytest.mark.parametrize("arch", ARCHS)
def test_logit_lens_last_layer_is_the_model_output(arch: str, request: pytest.FixtureRequest) -> None:
    h = request.getfixturevalue(arch)
    a, b = _pair(h)
    texts = list(_prompt(h))
    lens = logit_lens(h, texts, a, b)
    # the model's own log-odds, from its full forward
    seqs, pos = encode_prompts(h, texts)
    with torch.inference_mode():
        for i, (s, p) in enumerate(zip(seqs, pos, strict=True)):
            logits = h.model(input_ids=torch.tensor([s])).logits[0, p]
            ref = float(logits[token_id(h, a)] - logits[token_id(h, b)])
            assert lens.layer_log_odds[i, -1] == pytest.approx(ref, abs=1e-4)
            assert lens.output_log_odds[i] == pytest.approx(ref, abs=1e-4)
    assert lens.to_frame().shape[0] == len(texts) * len(blocks(h))


# ------------------------------------------------------------------------------------ patching


@pytest.mark.parametrize("arch", ARCHS)
def test_full_clean_residual_at_last_layer_restores_the_clean_metric(arch: str, request: pytest.FixtureRequest) -> None:
    h = request.getfixturevalue(arch)
    a, b = _pair(h)
    clean, corrupt = _prompt(h)
    L = len(blocks(h))
    cs, pos = encode_prompts(h, [clean])
    xs, _ = encode_prompts(h, [corrupt])
    tid = np.array([token_id(h, a)]), np.array([token_id(h, b)])
    den = patched_log_odds(h, xs, cs, pos, *tid, [Patch("resid", L - 1)])
    assert den.patched[0, 0] == pytest.approx(den.source[0], abs=1e-5)  # clean restored
    noi = patched_log_odds(h, cs, xs, pos, *tid, [Patch("resid", L - 1)])
    assert noi.patched[0, 0] == pytest.approx(noi.source[0], abs=1e-5)  # corrupted result
    assert den.base[0] == pytest.approx(noi.source[0], abs=1e-5)


def test_patching_is_independent_of_batching(llama) -> None:  # type: ignore[no-untyped-def]
    """Rows of different patches in one batch do not leak into each other."""
    kw = {"mode": "denoising", "per": "position", "kinds": ("resid", "attn", "mlp")}
    one = activation_patching(llama, ["the man said that"], ["the woman said that"], " man", " the",
                              max_batch_tokens=16, **kw)
    many = activation_patching(llama, ["the man said that"], ["the woman said that"], " man", " the", **kw)
    np.testing.assert_allclose(one.frame["log_odds"], many.frame["log_odds"], atol=1e-5)
    assert one.run.n_forwards == len(one.frame) and many.run.n_forwards == len(many.frame)


def test_planted_head_ranks_first_in_patching(planted) -> None:  # type: ignore[no-untyped-def]
    for mode in ("denoising", "noising"):
        p = activation_patching(planted, ["the man said that", "the engineer ate because"],
                                ["the woman said that", "the nurse ate because"], " he", " she", mode=mode, per="head")
        eff = p.mean_effect(("layer", "head")).sort_values("effect", ascending=False)
        top = eff.iloc[0]
        assert (int(top["layer"]), int(top["head"])) == PLANTED
        assert top["effect"] > 0.9
        assert eff["effect"].iloc[1:].abs().max() < 1e-4  # no other head carries anything


def test_planted_model_learned_the_stereotype(planted) -> None:  # type: ignore[no-untyped-def]
    lens = logit_lens(planted, ["the nurse said that", "the engineer said that"], " he", " she")
    assert lens.output_log_odds[0] < -1 < 1 < lens.output_log_odds[1]
    assert abs(lens.layer_log_odds[0, 0] - lens.layer_log_odds[1, 0]) < 1e-5  # no head in layer 0


# ------------------------------------------------------------------------------------ mediation probe


@pytest.fixture()
def planted_sets(tmp_path: Path) -> Path:
    obj = {"name": "planted", "language": "en", "pronouns": {"male": "he", "female": "she"},
           "gendered_words": {"male": "man", "female": "woman"},
           "professions": {"male": ["engineer", "pilot"], "female": ["nurse", "secretary"]},
           "templates": ["the [PROFESSION] said that [PRONOUN] was tired .",
                         "the [PROFESSION] ate because [PRONOUN] was hungry ."]}
    d = tmp_path / "sets"
    d.mkdir()
    (d / "planted.json").write_text(json.dumps(obj), encoding="utf-8")
    return d


def test_mediation_ranks_the_planted_head_first(planted, planted_sets: Path) -> None:  # type: ignore[no-untyped-def]
    from probes import run_probe

    r = run_probe("mediation", planted, str(planted_sets), progress=False, top_k=3)
    assert r.info["n_scored"] == 8
    top = r.info["top_heads"][0]
    assert (top["layer"], top["head"]) == PLANTED
    assert top["ci_low"] > 0
    heat = np.asarray(r.info["heatmap"]["values"])
    assert heat.shape == (2, 4)
    others = np.delete(heat.ravel(), PLANTED[0] * 4 + PLANTED[1])
    assert np.abs(others).max() < 1e-4
    # the only path: the head's NIE is the total effect, item by item
    items = r.items
    j = PLANTED[0] * 4 + PLANTED[1]
    nie = np.asarray([x[j] for x in items["nie"]])
    np.testing.assert_allclose(nie, items["total_effect"], rtol=1e-4)
    assert r.summary["total_effect"].value > 1  # swapping to the other gender flips the pronoun
    assert r.summary["stereotype_log_ratio"].value < 0
    assert set(r.breakdown["group_by"]) >= {"head", "attention_layer", "mlp_layer", "language"}


def test_mediation_leaves_out_sets_whose_words_are_not_one_token(planted, planted_sets: Path) -> None:  # type: ignore[no-untyped-def]
    from probes import run_probe

    obj = json.loads((planted_sets / "planted.json").read_text(encoding="utf-8"))
    obj.update(name="unknown_words", pronouns={"male": "hippo", "female": "she"})
    (planted_sets / "unknown.json").write_text(json.dumps(obj), encoding="utf-8")
    r = run_probe("mediation", planted, str(planted_sets), progress=False)
    assert r.info["n_scored"] == 8
    assert r.info["n_skipped"]["a contrast word is not one token for this model"] == 8
    assert any("unknown_words" in w and "not one token" in w for w in r.warnings)
    assert (r.info["top_heads"][0]["layer"], r.info["top_heads"][0]["head"]) == PLANTED


def test_mediation_by_hand_on_one_item(planted, planted_sets: Path) -> None:  # type: ignore[no-untyped-def]
    """TE and one NIE recomputed from plain forwards (Vig et al. 2020, eqs. 1-4)."""
    from probes import run_probe

    r = run_probe("mediation", planted, str(planted_sets), progress=False, sets=["planted"], max_items=1)
    row = r.items.iloc[0]
    tok = planted.tokenizer

    def y(text: str, patch: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]])

        def put(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[0, :, PLANTED[1]] = patch  # type: ignore[index]
            return x

        with torch.inference_mode(), intervene(planted, read=[("heads", PLANTED[0])],
                                                write={("heads", PLANTED[0]): put} if patch is not None else {}) as acts:
            p = torch.softmax(planted.model(input_ids=ids).logits[0, -1], -1)
        anti, stereo = tok.convert_tokens_to_ids(row["anti_word"]), tok.convert_tokens_to_ids(row["stereo_word"])
        return float(p[anti] / p[stereo]), acts[("heads", PLANTED[0])][0, :, PLANTED[1]]

    y_null, _ = y(row["prompt_null"])
    y_set, z_set = y(row["prompt_set"])
    y_nie, _ = y(row["prompt_null"], z_set)
    assert row["total_effect"] == pytest.approx(y_set / y_null - 1, rel=1e-4)
    assert row["nie"][PLANTED[0] * 4 + PLANTED[1]] == pytest.approx(y_nie / y_null - 1, rel=1e-4)


def test_mediation_runs_on_masked_lm_and_counts_unpatchable_items(bert_mlm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from probes import run_probe

    vocab = bert_mlm.tokenizer.get_vocab()
    he, she = [w for w in ("he", "she", "man", "the", "a") if w in vocab][:2]
    obj = {"name": "b", "language": "en", "pronouns": {"male": he, "female": she},
           "gendered_words": {"male": "man", "female": "woman"},
           "professions": {"male": ["engineer", "x"], "female": ["nurse"]},
           "templates": ["the [PROFESSION] said that [PRONOUN] was tired ."]}
    (tmp_path / "b.json").write_text(json.dumps(obj), encoding="utf-8")
    r = run_probe("mediation", bert_mlm, str(tmp_path), progress=False, sites=["heads", "mlp"])
    assert r.info["n_scored"] + sum(r.info["n_skipped"].values()) == 3
    assert np.asarray(r.info["heatmap"]["values"]).shape == (2, 4)
    assert "attn_by_layer" not in r.info and len(r.info["mlp_by_layer"]) == 2


def test_mediation_reads_winobias_occupations(planted_sets: Path, tmp_path: Path) -> None:
    from probes.mediation import build_items, load_sets, read_winobias_occupations

    wb = tmp_path / "wb"
    wb.mkdir()
    (wb / "male_occupations.txt").write_text("driver\nengineer\n", encoding="utf-8")
    (wb / "female_occupations.txt").write_text("nurse\ncashier\n", encoding="utf-8")
    items = build_items(load_sets(planted_sets), read_winobias_occupations(wb))
    assert set(items.loc[items["profession_source"] == "winobias", "profession"]) == {"driver", "cashier"}
    row = items[items["profession"] == "driver"].iloc[0]
    assert (row["prompt_set"], row["anti_word"], row["stereo_word"]) == ("the woman said that", "she", "he")
    (wb / "female_occupations.txt").unlink()
    from audit.probe import ProbeError

    with pytest.raises(ProbeError, match="female_occupations.txt"):
        read_winobias_occupations(wb)


def test_mediation_bad_template_file_is_named(tmp_path: Path) -> None:
    from audit.probe import ProbeError
    from probes.mediation import load_sets

    f = tmp_path / "x.json"
    f.write_text(json.dumps({"name": "x", "language": "en", "pronouns": {"male": "he", "female": "she"},
                             "gendered_words": {"male": "man", "female": "woman"},
                             "professions": {"male": ["a"]}, "templates": ["[PRONOUN] the [PROFESSION]"]}))
    with pytest.raises(ProbeError, match=r"x.json: templates\[0\]"):
        load_sets(f)


def test_shipped_sets_parse() -> None:
    from probes.mediation import build_items, load_sets

    sets = load_sets()
    assert {s.language for s in sets} == {"en", "tr"}
    assert len(build_items(sets, None)) > 300


def test_ablation_check_on_planted_head(planted, planted_sets: Path) -> None:  # type: ignore[no-untyped-def]
    """Mean-ablating the planted head removes what it carried: the mediation effect of the swap
    vanishes on the ablated model, and the check reports templates' change and the loss change."""
    from audit.explain.mechanism import ablate_heads, mean_head_outputs
    from probes import run_probe

    crows = planted_sets.parent / "crows.csv"
    crows.write_text("sent_more,sent_less,stereo_antistereo,bias_type\n"
                     "the nurse said that she was tired .,the nurse said that he was tired .,stereo,gender\n"
                     "the engineer said that he was tired .,the engineer said that she was tired .,stereo,gender\n"
                     "the pilot ate because he was hungry .,the pilot ate because she was hungry .,stereo,gender\n",
                     encoding="utf-8")
    r = run_probe("mediation", planted, str(planted_sets), progress=False, top_k=2, ablate_top_k=1,
                  ablation_max_items=6, ablation_crows_pairs=str(crows))
    ab = r.info["ablation"]
    c = ab["probes"]["crows_pairs"]
    assert c["before"]["value"] == 100.0  # the planted stereotype: every pair prefers it
    assert c["after"]["value"] < 100.0 and c["change"]["value"] < 0  # ablating the head removes it
    assert ab["heads"] == [{"layer": PLANTED[0], "head": PLANTED[1]}]
    assert "not a debiasing method" in ab["note"]
    t = ab["probes"]["templates"]
    assert t["change"]["n"] > 0 and t["change"]["ci_low"] <= t["change"]["value"] <= t["change"]["ci_high"]
    assert ab["neutral_loss"]["n_texts"] >= 30
    means = mean_head_outputs(planted, list(r.items["prompt_null"]), [PLANTED])
    with ablate_heads(planted, means):
        lens = logit_lens(planted, ["the man said that", "the woman said that"], " he", " she")
    assert lens.output_log_odds[0] == pytest.approx(lens.output_log_odds[1], abs=1e-5)


@pytest.mark.slow
def test_smollm2_logit_lens_and_full_patch() -> None:
    """On SmolLM2-135M: the logit lens at the last layer equals the model's output log-odds (1e-4),
    and patching the full clean residual at the last layer restores the clean metric."""
    h = load_model("smollm2-135m", device="cpu")
    texts = ["The nurse said that", "The engineer said that"]
    lens = logit_lens(h, texts, " she", " he")
    seqs, pos = encode_prompts(h, texts)
    with torch.inference_mode():
        for i, s in enumerate(seqs):
            lg = h.model(input_ids=torch.tensor([s])).logits[0, pos[i]]
            ref = float(lg[token_id(h, " she")] - lg[token_id(h, " he")])
            assert lens.layer_log_odds[i, -1] == pytest.approx(ref, abs=1e-4)
    L = len(blocks(h))
    p = activation_patching(h, ["The man said that"], ["The woman said that"], " he", " she", layers=[L - 1])
    last = p.frame[p.frame["position"] == len(seqs[0]) - 1]
    assert float(last["log_odds"].iloc[0]) == pytest.approx(float(p.clean_log_odds[0]), abs=1e-4)
    full = patched_log_odds(h, encode_prompts(h, ["The woman said that"])[0], encode_prompts(h, ["The man said that"])[0],
                            [pos[0]], np.array([token_id(h, " he")]), np.array([token_id(h, " she")]),
                            [Patch("resid", L - 1)])
    assert full.patched[0, 0] == pytest.approx(full.source[0], abs=1e-4)


# ------------------------------------------------------------------------------------ explain method / step


def test_patching_explainer_finds_the_planted_head(planted) -> None:  # type: ignore[no-untyped-def]
    from audit.explain import explain

    a = explain(planted, ["the man said that", "the engineer ate because"], "patching",
                {"token": " he", "contrast": " she"}, corrupt={"man": "woman", "engineer": "nurse"})
    assert a.layout == "heads"
    for e in a:
        assert e.scores.shape == (2, 4)
        assert np.unravel_index(np.nanargmax(e.scores), e.scores.shape) == PLANTED
        assert e.scores[PLANTED] == pytest.approx(1.0, abs=1e-4)  # the only path restores everything
        assert e.info["clean_log_odds"] > e.info["corrupt_log_odds"]
        assert e.info["logit_lens"][-1] == pytest.approx(e.info["clean_log_odds"], abs=1e-4)
    frame = a.to_frame()
    assert set(frame["layer"].dropna()) == {0, 1} and len(frame) == 16


def test_patching_explainer_errors(planted, bert_classifier) -> None:  # type: ignore[no-untyped-def]
    from audit.explain import MethodNotValidError, explain

    with pytest.raises(TargetError, match="contrast"):
        explain(planted, ["the man said that"], "patching", {"token": " he"}, corrupt={"man": "woman"})
    with pytest.raises(TargetError, match="corrupt"):
        explain(planted, ["the man said that"], "patching", {"token": " he", "contrast": " she"})
    with pytest.raises(TargetError, match="no word"):
        explain(planted, ["the man said that"], "patching", {"token": " he", "contrast": " she"},
                corrupt={"pilot": "nurse"})
    with pytest.raises(MethodNotValidError):
        explain(bert_classifier, ["the man is kind"], "patching", {}, corrupt={"man": "woman"})


def test_patching_as_an_explain_step(planted, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The config path: an explain entry with method patching writes the layer × head grid."""
    import pandas as pd

    from audit.explain import run_explain_step, validate_explain_spec
    from audit.store import RunDir

    spec = validate_explain_spec({"name": "where", "methods": ["patching"], "texts": ["the nurse said that"],
                                  "target": {"token": " he", "contrast": " she"},
                                  "options": {"corrupt": {"nurse": "man"}, "mode": "noising"}})
    rd = RunDir(tmp_path / "run")
    run_explain_step(planted, spec, rd, "where", progress=False)
    df = pd.read_parquet(rd.explain_dir("where") / "attributions.parquet")
    top = df.sort_values("score", ascending=False).iloc[0]
    assert (int(top["layer"]), int(top["head"])) == PLANTED


# ------------------------------------------------------------------------------------ config, report


def test_mediation_from_a_config_lands_in_the_report(planted, planted_sets: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A config runs mediation (with the ablation check) and per-head patching on a model folder;
    the HTML report gets the "Where the bias is carried" section with the heat map and the
    ablation table, and report.json validates against its schema."""
    import jsonschema
    import yaml

    from audit.config import load_config
    from audit.runner import run_audit
    from reports.content import collect_report
    from reports.html import render_html

    cfg = {"seed": 0, "output": str(tmp_path / "runs"), "models": [{"name": planted.source}],
           "probes": [{"probe": "mediation", "data": str(planted_sets),
                       "options": {"top_k": 3, "ablate_top_k": 1, "ablation_max_items": 4}}],
           "explain": [{"name": "where", "methods": ["patching"], "texts": ["the nurse said that"],
                        "target": {"token": " he", "contrast": " she"}, "options": {"corrupt": {"nurse": "man"}}}],
           "report": {"enabled": False}}
    p = tmp_path / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    [o] = run_audit(load_config(p), run_id="m", progress=False)
    assert o.status == "complete"
    doc = collect_report(o.run_dir)
    [m] = doc["mechanism"]
    assert m["top_heads"][0]["head"] == f"L{PLANTED[0]}.H{PLANTED[1]}"
    assert len(m["heat"]["matrix"]) == 2 and m["ablation"]["heads"] == f"L{PLANTED[0]}.H{PLANTED[1]}"
    schema = json.loads((Path(__file__).resolve().parents[1] / "reports" / "report.schema.json").read_text())
    jsonschema.validate(json.loads(json.dumps(doc, default=str)), schema)
    html = render_html(doc)
    assert "Where the bias is carried" in html and "Ablation check (diagnostic)" in html
    assert 'alt="Layer × head map of natural indirect effects for mediation"' in html
    assert "neutral-text loss" in html and "not proof of a mechanism" in html
    # the dashboard's Mechanism page draws the same numbers
    from streamlit.testing.v1 import AppTest

    from dashboard import RUNS_ENV

    os.environ[RUNS_ENV] = str(tmp_path / "runs")
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=120)
        at.run()
        at.switch_page("views/mechanism.py").run()
    finally:
        del os.environ[RUNS_ENV]
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["mediation"]
    tables = [d.value for d in at.dataframe]
    assert tables[0]["head"].iloc[0] == f"L{PLANTED[0]}.H{PLANTED[1]}"
    assert "neutral-text loss (nats/token)" in set(tables[1]["measure"])
