"""audit.scoring: batched primitives equal the naive one-forward-per-item loop to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit import scoring
from audit.scoring import causal as causal_scoring

SENTS = [
    "the man is good at work",
    "She was kind today",
    "the doctor seems angry in the city",
    "a mexican worker became rich",
    "hi",
    "The immigrant looked happy with the children after school",
]


@pytest.mark.parametrize("fixture", ["bert_mlm", "roberta_mlm"])
@pytest.mark.parametrize("budget", [16, 64, 100_000])
def test_masked_pll_equals_naive(request: pytest.FixtureRequest, fixture: str, budget: int) -> None:
    h = request.getfixturevalue(fixture)
    ids = [h.tokenizer(t)["input_ids"] for t in SENTS]
    got = scoring.pseudo_log_likelihood(h, ids, max_batch_tokens=budget)
    ref = scoring.naive_pseudo_log_likelihood(h, ids)
    assert [len(g) for g in got] == [len(i) - 2 for i in ids]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_masked_pll_custom_positions(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    ids = [bert_mlm.tokenizer(t)["input_ids"] for t in SENTS[:2]]
    pos = [[1, 3], [2]]
    got = scoring.pseudo_log_likelihood(bert_mlm, ids, pos)
    ref = scoring.naive_pseudo_log_likelihood(bert_mlm, ids, pos)
    assert [len(g) for g in got] == [2, 1]
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5)


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
@pytest.mark.parametrize("budget", [8, 40, 100_000])
def test_causal_equals_naive(request: pytest.FixtureRequest, fixture: str, budget: int) -> None:
    h = request.getfixturevalue(fixture)
    seqs = scoring.causal_tokenize(h, SENTS)
    # the prefix token stands for the empty context (BOS, else EOS for GPT-2)
    expected_prefix = h.tokenizer.bos_token_id if h.tokenizer.bos_token_id is not None else h.tokenizer.eos_token_id
    assert all(s[0] == expected_prefix for s in seqs)
    got = scoring.causal_logprobs(h, seqs, max_batch_tokens=budget)
    ref = scoring.naive_causal_logprobs(h, seqs)
    for g, r, s in zip(got, ref, seqs, strict=True):
        assert len(g) == len(s) - 1
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_causal_score_from_and_continuations(llama) -> None:  # type: ignore[no-untyped-def]
    ctx, cont = "the nurse said", " she was kind"
    lp = scoring.continuation_logprobs(llama, [ctx], [cont])[0]
    whole = scoring.causal_tokenize(llama, [ctx + cont])[0]
    n_ctx = len(llama.tokenizer(ctx, add_special_tokens=False)["input_ids"])
    full = scoring.naive_causal_logprobs(llama, [whole])[0]
    # continuation tokens are the last len(lp) tokens; context tokens scored from the prefix
    np.testing.assert_allclose(lp, full[n_ctx:], atol=1e-5)
    # an empty context scores every token, given the prefix token
    lp0 = scoring.continuation_logprobs(llama, [""], [ctx])[0]
    np.testing.assert_allclose(lp0, scoring.naive_causal_logprobs(llama, scoring.causal_tokenize(llama, [ctx]))[0], atol=1e-5)


def test_sentence_logprob_sums(gpt2) -> None:  # type: ignore[no-untyped-def]
    s = scoring.sentence_logprob(gpt2, SENTS[:3])
    ref = [x.sum() for x in scoring.naive_causal_logprobs(gpt2, scoring.causal_tokenize(gpt2, SENTS[:3]))]
    np.testing.assert_allclose(s, ref, atol=1e-5)


def test_length_sorted_batches_respect_budget() -> None:
    lengths = [5, 17, 3, 9, 9, 12, 1, 30]
    batches = scoring.length_sorted_batches(lengths, max_tokens=32)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 32 or len(b) == 1
    # longest first
    assert lengths[batches[0][0]] == 30
    # no row is more than 25 % padding beyond its batch's longest
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert all(lengths[i] * 1.25 >= longest for i in b)


def test_oom_halves_and_retries() -> None:
    seen: list[int] = []

    def fn(b: np.ndarray) -> None:
        if len(b) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.extend(b.tolist())

    scoring.run_batches([np.arange(8)], fn)
    assert sorted(seen) == list(range(8))

    def other(b: np.ndarray) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        scoring.run_batches([np.arange(4)], other)


def test_embed_mean_pooling_matches_manual(bert_encoder) -> None:  # type: ignore[no-untyped-def]
    e = scoring.embed(bert_encoder, SENTS[:3], pooling="mean", normalize=False, max_batch_tokens=16)
    for i, t in enumerate(SENTS[:3]):
        x = bert_encoder.tokenizer([t], return_tensors="pt")
        with torch.inference_mode():
            h = bert_encoder.model(**x).last_hidden_state[0].mean(0).numpy()
        np.testing.assert_allclose(e[i], h, atol=1e-5)
    n = scoring.embed(bert_encoder, SENTS[:3])
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    cls = scoring.embed(bert_encoder, SENTS[:1], pooling="cls", normalize=False)
    x = bert_encoder.tokenizer(SENTS[:1], return_tensors="pt")
    with torch.inference_mode():
        np.testing.assert_allclose(cls[0], bert_encoder.model(**x).last_hidden_state[0, 0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="unknown pooling"):
        scoring.embed(bert_encoder, SENTS[:1], pooling="max")


def test_hidden_states_shape(llama) -> None:  # type: ignore[no-untyped-def]
    hs = scoring.hidden_states(llama, SENTS[:4])
    assert hs.shape == (3, 4, 32)


def test_too_long_input_is_clear(gpt2) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(scoring.InputTooLongError, match="at most 128"):
        scoring.causal_logprobs(gpt2, [[1] * 200])


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
def test_shared_context_packing_equals_separate_scoring(request: pytest.FixtureRequest, fixture: str) -> None:
    """k continuations of one context packed behind it (4-D mask, restarted positions) give the
    same log-probs as scoring context + continuation separately."""
    h = request.getfixturevalue(fixture)
    ctx = ["the nurse said", "the nurse said", "the nurse said", "my friend is", "my friend is", "he"]
    cont = [" she was kind", " he was kind", " nothing", " good", " a doctor at work", " is"]
    packed = scoring.continuation_logprobs(h, ctx, cont, max_batch_tokens=30)
    separate = scoring.continuation_logprobs(h, ctx, cont, pack=False)
    for p, s in zip(packed, separate, strict=True):
        assert len(p) == len(s) > 0
        np.testing.assert_allclose(p, s, atol=1e-5)


def test_pack_rows_places_every_item_once_within_its_row() -> None:
    lengths = [36, 8, 20, 20, 9, 30, 1, 64, 12, 20]
    plan = scoring.pack_rows(lengths, max_tokens=128, min_row=40)
    flat = sorted(i for rows in plan for row in rows for i in row)
    assert flat == list(range(len(lengths)))
    # the first batch is set by the longest item (64): 128 // 64 = 2 rows of 64 tokens
    assert plan[0][0][0] == 7 and len(plan[0]) == 2
    for rows in plan:
        row_len = max(max(lengths[row[0]] for row in rows), 40)
        assert all(sum(lengths[i] for i in row) <= row_len for row in rows)
    # best fit: the 64-token row is full, the second row is 36 + the 20s that fit after it... by hand:
    # row 2 = [36, 20, 8] (the longest that still fits each time: 28 left → 20, 8 left → 8)
    assert [lengths[i] for i in plan[0][1]] == [36, 20, 8]


def test_pack_rows_bounds_the_attention_mask() -> None:
    plan = scoring.pack_rows([500] * 10, max_tokens=100_000, min_row=64, max_mask=4 * 500**2)
    assert [len(rows) for rows in plan] == [4, 4, 2]


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
def test_causal_packing_is_used_and_equals_naive(request: pytest.FixtureRequest, fixture: str) -> None:
    """Several sequences share a row (block-diagonal causal mask, restarted positions), with
    scoring starting mid-sequence for some: equal to one unpadded forward per sequence."""
    h = request.getfixturevalue(fixture)
    assert causal_scoring._packing_supported(h)
    seqs = scoring.causal_tokenize(h, SENTS * 3)
    starts = [1 + (i % 4) for i in range(len(seqs))]
    calls: list[tuple[int, ...]] = []
    hook = h.model.base_model.register_forward_pre_hook(
        lambda _m, _a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        got = scoring.causal_logprobs(h, seqs, score_from=starts, max_batch_tokens=64)
    finally:
        hook.remove()
    ref = scoring.naive_causal_logprobs(h, seqs, score_from=starts)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)
    # packed: fewer rows than sequences, no row longer than max(longest, 64)
    assert sum(b for b, _ in calls) < len(seqs)
    assert max(t for _, t in calls) <= max(64, max(len(s) for s in seqs))


def test_model_without_packed_masks_falls_back_to_padding(gpt2, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A model that ignores 4-D masks and position ids fails the one-time check and is scored
    with padded rows — a 2-D mask, no position ids — still exactly, also where sequences share a
    prefix or repeat."""
    base = gpt2.model.base_model
    real = base.forward
    seen: list[tuple[int, bool]] = []

    def ignore_packing(*a, attention_mask=None, position_ids=None, **kw):  # type: ignore[no-untyped-def]
        seen.append((getattr(attention_mask, "ndim", 0), position_ids is not None))
        if attention_mask is not None and attention_mask.dim() == 4:
            attention_mask = None
        return real(*a, attention_mask=attention_mask, **kw)

    monkeypatch.setattr(base, "forward", ignore_packing)
    monkeypatch.setattr(causal_scoring, "_PACKING_CHECKED", causal_scoring.weakref.WeakKeyDictionary())
    assert not causal_scoring._packing_supported(gpt2)
    seen.clear()
    seqs = scoring.causal_tokenize(gpt2, [*SENTS, SENTS[0], SENTS[1] + " again"])
    got = scoring.causal_logprobs(gpt2, seqs)
    assert seen and set(seen) == {(2, False)}
    for g, r in zip(got, scoring.naive_causal_logprobs(gpt2, seqs), strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_nan_in_one_packed_sequence_does_not_reach_its_row_mates(gpt2) -> None:  # type: ignore[no-untyped-def]
    """A NaN at one token reaches every sequence sharing its row through attention (0 × NaN = NaN);
    the poisoned row is rescored one sequence per forward, so only the faulty sequence stays NaN."""
    seqs = scoring.causal_tokenize(gpt2, SENTS)
    marker = seqs[2][3]
    assert all(marker not in s for i, s in enumerate(seqs) if i != 2)

    def hook(_module, args, out):  # type: ignore[no-untyped-def]
        out = out.clone()
        out[args[0] == marker] = float("nan")  # only that token's embedding
        return out

    handle = gpt2.model.get_input_embeddings().register_forward_hook(hook)
    try:
        got = scoring.causal_logprobs(gpt2, seqs, max_batch_tokens=1000)
    finally:
        handle.remove()
    ref = scoring.naive_causal_logprobs(gpt2, seqs)
    assert not np.isfinite(got[2]).all()
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        if i != 2:
            np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


def test_packed_batch_out_of_memory_is_split_and_retried(gpt2, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A packed batch that runs out of memory is retried as two halves of its rows (the same
    back-off as padded batches), with the same numbers."""
    base = gpt2.model.base_model
    real = base.forward
    seen: list[int] = []

    def small_only(*a, **kw):  # type: ignore[no-untyped-def]
        rows = int(kw["input_ids"].shape[0])
        seen.append(rows)
        if rows > 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*a, **kw)

    rng = np.random.default_rng(0)  # 40 distinct sequences of 10 tokens: rows of 64, 4 a batch
    seqs = [[0, *rng.integers(1, 300, size=9).tolist()] for _ in range(40)]
    assert causal_scoring._packing_supported(gpt2)  # checked before the forward is patched
    monkeypatch.setattr(base, "forward", small_only)
    got = scoring.causal_logprobs(gpt2, seqs, max_batch_tokens=256)
    monkeypatch.undo()
    assert max(seen) > 1 and seen[-1] == 1
    for g, r in zip(got, scoring.naive_causal_logprobs(gpt2, seqs), strict=True):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)
