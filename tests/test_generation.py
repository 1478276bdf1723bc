"""Batched, seeded generation: left padding equals one-prompt greedy decoding; sampling is
reproducible per prompt and seed; settings are recorded; bad inputs are refused."""

from __future__ import annotations

import math

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
