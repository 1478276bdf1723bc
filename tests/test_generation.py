"""Batched, seeded generation: left padding equals one-prompt greedy decoding; sampling is
reproducible per prompt and seed; settings are recorded; bad inputs are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audit import scoring
from audit.generation import GenerationError, generate, prompt_seed, top_p_filter

PROMPTS = ["the man is", "she was very happy at work and the doctor", "my friend", "the teacher was"]


def _naive_greedy(handle, prompt: str, n: int) -> str:  # type: ignore[no-untyped-def]
    """Reference: one unpadded full forward per new token, argmax, stop at EOS."""
    ids = scoring.causal_tokenize(handle, [prompt])[0]
    new: list[int] = []
    for _ in range(n):
        with torch.inference_mode():
            logits = handle.model(input_ids=torch.as_tensor([ids + new])).logits[0, -1]
        t = int(torch.argmax(logits))
        if t == handle.tokenizer.eos_token_id:
            break
        new.append(t)
    return handle.tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_left_padded_greedy_equals_one_prompt_decoding(model: str, request: pytest.FixtureRequest) -> None:
    handle = request.getfixturevalue(model)
    out = generate(handle, PROMPTS, max_new_tokens=6, batch_size=4)
    assert list(out) == [_naive_greedy(handle, p, 6) for p in PROMPTS]


def test_sampling_is_reproducible_per_prompt(gpt2) -> None:  # type: ignore[no-untyped-def]
    kw = {"max_new_tokens": 8, "do_sample": True, "temperature": 1.0}
    a = generate(gpt2, PROMPTS, seed=1, batch_size=4, **kw)
    b = generate(gpt2, PROMPTS, seed=1, batch_size=4, **kw)
    assert list(a) == list(b)
    # the batch a prompt lands in does not change its continuation
    c = generate(gpt2, PROMPTS, seed=1, batch_size=1, **kw)
    assert list(c) == list(a)
    d = generate(gpt2, list(reversed(PROMPTS)), seed=1, batch_size=3, **kw)
    assert list(reversed(d)) == list(a)
    # another seed gives other text (the tiny model is close to uniform over 400 tokens)
    e = generate(gpt2, PROMPTS, seed=2, batch_size=4, **kw)
    assert sum(x != y for x, y in zip(a, e, strict=True)) >= 3


def test_repeated_prompts_get_different_samples(gpt2) -> None:  # type: ignore[no-untyped-def]
    out = generate(gpt2, ["the man is"] * 3, max_new_tokens=8, do_sample=True, seed=0)
    assert len(set(out)) == 3
    assert prompt_seed(0, "x", 0) != prompt_seed(0, "x", 1) != prompt_seed(1, "x", 0)
    assert prompt_seed(5, "x", 2) == prompt_seed(5, "x", 2)


def test_settings_are_recorded(llama) -> None:  # type: ignore[no-untyped-def]
    out = generate(llama, PROMPTS[:2], max_new_tokens=3, do_sample=True, top_p=0.9, seed=7, batch_size=2)
    s = out.settings.as_dict()
    assert s["max_new_tokens"] == 3 and s["do_sample"] is True and s["top_p"] == 0.9 and s["seed"] == 7
    assert s["padding"] == "left" and "sha256" in s["sampler"]
    assert generate(llama, PROMPTS[:1], max_new_tokens=2).settings.as_dict()["sampler"] == "greedy (argmax)"
    assert len(generate(llama, [], max_new_tokens=2)) == 0


def test_top_p_filter_keeps_the_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    keep = torch.isfinite(top_p_filter(logits, 0.6))[0].tolist()
    assert keep == [True, True, False]
    assert torch.isfinite(top_p_filter(logits, 0.5))[0].tolist() == [True, False, False]
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    # the order of the vocabulary does not matter
    shuffled = logits[:, [2, 0, 1]]
    assert torch.isfinite(top_p_filter(shuffled, 0.6))[0].tolist() == [False, True, True]
    assert math.isclose(float(torch.softmax(top_p_filter(logits, 0.6), -1)[0, 0]), 0.5 / 0.8, rel_tol=1e-6)


def test_refuses_encoders_bad_settings_and_long_prompts(bert_encoder, gpt2) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GenerationError, match="needs a causal LM.*encoder"):
        generate(bert_encoder, ["hello"])
    with pytest.raises(GenerationError, match="temperature"):
        generate(gpt2, ["hello"], do_sample=True, temperature=0)
    with pytest.raises(GenerationError, match="top_p"):
        generate(gpt2, ["hello"], top_p=1.5)
    with pytest.raises(GenerationError, match="max_new_tokens"):
        generate(gpt2, ["hello"], max_new_tokens=0)
    with pytest.raises(scoring.InputTooLongError, match="plus 100 new tokens"):
        generate(gpt2, ["the man is " * 12], max_new_tokens=100)


# --------------------------------------------------------------------------------------------
# non-finite logits (issue 9): flagged per prompt, the row stops, the other rows are unchanged
# --------------------------------------------------------------------------------------------


def test_non_finite_guard_flags_live_rows_and_leaves_finite_rows_alone() -> None:
    from audit.generation import _NonFiniteGuard

    nan, inf = float("nan"), float("inf")
    scores = torch.tensor([
        [0.1, 0.2, 0.3, 0.4],      # finite
        [0.1, nan, 0.3, 0.4],      # NaN
        [-inf, 0.2, -inf, 0.4],    # some -inf: probability 0, valid
        [-inf, -inf, -inf, -inf],  # nothing finite
        [0.1, inf, 0.3, 0.4],      # +inf
        [nan, nan, nan, nan],      # NaN, but the row already emitted EOS (id 3): finished
    ])
    prompt = torch.zeros((6, 2), dtype=torch.long)
    new = torch.tensor([[1], [1], [1], [1], [1], [3]])
    guard = _NonFiniteGuard(6, prompt_width=2, stop_id=3, eos_id=3)
    out = guard(torch.cat([prompt, new], 1), scores.clone())
    assert guard.flags.tolist() == [False, True, False, True, True, False]
    assert torch.equal(out[[0, 2]], scores[[0, 2]])
    stand_in = torch.tensor([-inf, -inf, -inf, 0.0])
    for r in (1, 3, 4, 5):  # every non-finite row (finished or not) gets the EOS-only stand-in
        assert torch.equal(out[r], stand_in), r
    # flags accumulate over steps; an all-finite step returns the very same tensor
    clean = torch.zeros((6, 4))
    assert guard(torch.cat([prompt, new, new], 1), clean) is clean
    assert guard.flags.tolist() == [False, True, False, True, True, False]


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("do_sample", [False, True])
def test_nan_logits_are_flagged_and_the_other_prompts_unchanged(model: str, do_sample: bool,
                                                                request: pytest.FixtureRequest) -> None:
    from tests.test_faults import nan_rows, unused_marker

    handle = request.getfixturevalue(model)
    kw = {"max_new_tokens": 6, "do_sample": do_sample, "seed": 3, "batch_size": 3}
    clean = generate(handle, PROMPTS, **kw)
    assert clean.non_finite.dtype == bool and clean.non_finite.tolist() == [False] * len(PROMPTS)
    word, marker = unused_marker(handle, PROMPTS + list(clean))
    poisoned = [f"the {word} man is", f"my {word} friend"]
    prompts = [PROMPTS[0], poisoned[0], PROMPTS[1], PROMPTS[2], poisoned[1], PROMPTS[3]]
    for value in (float("nan"), float("inf")):
        with nan_rows(handle, marker, value):
            out = generate(handle, prompts, **kw)  # sampling from NaN used to raise in torch.multinomial
        assert isinstance(out.non_finite, np.ndarray) and out.non_finite.shape == (len(prompts),)
        assert out.non_finite.tolist() == [False, True, False, False, True, False], value
        assert [out[i] for i in (0, 2, 3, 5)] == list(clean)
        assert out[1] == out[4] == ""  # poisoned from the first step: the row stops at once
