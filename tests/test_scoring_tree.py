"""audit.scoring's prefix-tree scorer: every trie node computed once, every score equal to scoring
each sequence alone — on random prefix sets, per probe, and on SmolLM2."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import scoring
from audit.probe import chunk_bounds
from audit.scoring import causal as causal_scoring
from probes import run_probe
from tests.test_bbq import SPEC, _row, write_jsonl
from tests.test_classifier_fairness import _csv, _rows
from tests.test_crows_pairs import PAIRS, write_csv
from tests.test_stereoset import write_dataset

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _prefixes(seqs: list[list[int]]) -> int:
    """Distinct non-empty prefixes: the nodes of the trie, counted without building one."""
    return len({tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)})


def test_units_split_a_subtree_under_its_repeated_trunk() -> None:
    """By hand: [1 2 3], [1 2 4], [1 5] form the preorder trie 0:1 → 1:2 → (2:3, 3:4), 4:5. With
    rows of 3 tokens the top subtree (5 nodes) does not fit, nor does node 1's under its trunk [0]:
    units are [0 1 | 2], [0 1 | 3] and [0 | 4]; nodes 0 and 1 are scored in the first unit only."""
    seqs = [[1, 2, 3], [1, 2, 4], [1, 5]]
    tree, units = next(scoring.prefix_tree_plan(seqs, [1, 1, 1], row_tokens=3))
    assert tree.token.tolist() == [1, 2, 3, 4, 5]
    assert tree.parent.tolist() == [-1, 0, 1, 1, 0]
    assert tree.end.tolist() == [5, 4, 3, 4, 5]
    assert units == [(1, 2, 3), (1, 3, 4), (0, 4, 5)]
    assert tree.sizes(units) == [3, 3, 2]
    assert tree.home(units).tolist() == [0, 0, 0, 1, 2]
    assert [p.tolist() for p in tree.paths] == [[0, 1, 2], [0, 1, 3], [0, 4]]
    # rows of 5 tokens hold the whole tree as one unit
    assert next(scoring.prefix_tree_plan(seqs, [1, 1, 1], row_tokens=5))[1] == [(-1, 0, 5)]


def test_groups_bound_the_trie_and_cover_every_sequence() -> None:
    rng = np.random.default_rng(0)
    seqs = [[0, *rng.integers(1, 4, size=int(rng.integers(1, 9))).tolist()] for _ in range(200)]
    groups = list(scoring.prefix_tree_plan(seqs, [1] * len(seqs), row_tokens=16, max_nodes=40))
    assert len(groups) > 3
    assert sorted(m for tree, _ in groups for m in tree.members) == list(range(len(seqs)))
    for tree, units in groups:  # at most max_nodes, plus the 256-sequence window that picks the cut
        assert len(tree.token) <= 40 + 256 * 9
        assert max(tree.sizes(units)) <= 16
        assert all(len(tree.trunk(p)) + b - a == n for (p, a, b), n in zip(units, tree.sizes(units), strict=True))


def test_chunk_bounds_cut_where_neighbours_share_least() -> None:
    """Groups of 5 items that share a text prefix, chunks of 8 (boundaries may move by 8 // 8 = 1):
    by hand, the cut near 8 finds no group break within 7…9 and stays at 8; the cut near 16 moves
    to the break at 15. The number of chunks is always ceil(n / size)."""
    keys = [f"group{i // 5} item{i:02d}" for i in range(24)]
    assert chunk_bounds(keys, 8) == [0, 8, 15, 24]
    assert chunk_bounds(keys, 3) == [0, 3, 6, 9, 12, 15, 18, 21, 24]  # 3 // 8 = 0: plain chunks
    rng = np.random.default_rng(1)
    for n, size in [(1, 4), (7, 7), (100, 9), (257, 16), (1000, 64)]:
        ks = sorted(f"{rng.integers(0, 4)}{rng.integers(0, 4)}{rng.integers(0, 99)}" for _ in range(n))
        b = chunk_bounds(ks, size)
        assert len(b) - 1 == -(-n // size) and b[0] == 0 and b[-1] == n
        assert all(0 < y - x <= size + 2 * (size // 8) for x, y in zip(b[:-1], b[1:], strict=True))


@pytest.fixture(scope="module")
def alphabets(request: pytest.FixtureRequest) -> dict[str, Any]:
    return {name: request.getfixturevalue(name) for name in ("gpt2", "llama")}


@SETTINGS
@given(data=st.data(), name=st.sampled_from(["gpt2", "llama"]))
def test_random_prefix_sets_equal_scoring_each_alone(alphabets: dict[str, Any], data: st.DataObject, name: str) -> None:
    """Random sequences over a 3-token alphabet (so they share prefixes at every depth), duplicates
    included, random start positions, rows and batches small enough to split subtrees and halve
    groups: every score equals one forward per sequence within 1e-4, and the tree computes no more
    tokens than the sequences hold."""
    h = alphabets[name]
    pre = scoring.prefix_token_id(h)
    words = data.draw(st.lists(st.integers(5, 120), min_size=3, max_size=3, unique=True))
    bodies = data.draw(st.lists(st.lists(st.sampled_from(words), min_size=0, max_size=10), min_size=1, max_size=12))
    seqs = [[pre, *b] for b in bodies]
    starts = [data.draw(st.integers(1, max(len(s) - 1, 1))) for s in seqs]
    row = data.draw(st.integers(11, 40))
    budget = data.draw(st.sampled_from([11, 32, 100, 4096]))
    max_nodes = data.draw(st.sampled_from([8, 1 << 20]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(causal_scoring, "prefix_tree_plan", functools.partial(scoring.prefix_tree_plan, max_nodes=max_nodes))
        got = scoring.causal_logprobs(h, seqs, score_from=starts, max_batch_tokens=budget, row_tokens=row)
    ref = scoring.naive_causal_logprobs(h, seqs, score_from=starts)
    for g, r in zip(got, ref, strict=True):
        assert len(g) == len(r)
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=0)
    computed = sum(sum(t.sizes(units)) for t, units in scoring.prefix_tree_plan(seqs, starts, row))
    assert _prefixes(seqs) <= computed <= sum(len(s) for s in seqs)


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
def test_each_prefix_is_forwarded_once(request: pytest.FixtureRequest, fixture: str) -> None:
    """Sentences sharing prefixes (pairs, and a sentence that is a prefix of another): the rows
    forwarded hold exactly the distinct prefixes, and every score equals scoring alone, for every
    start position (also inside a shared prefix)."""
    h = request.getfixturevalue(fixture)
    texts = ["the man is good at work", "the man is bad at work", "She was kind today", "He was kind today",
             "the doctor", "the doctor seems angry", "the man is good at work"]
    seqs = scoring.causal_tokenize(h, texts)
    starts = [1, 3, 1, 2, 2, 1, 4]
    assert causal_scoring._packing_supported(h)  # the one-time check forwards a tree of its own
    real = causal_scoring._tree_layout
    forwarded: list[int] = []

    def counting(tree, units, home, rows, pad_id):  # type: ignore[no-untyped-def]
        sizes = tree.sizes(units)
        forwarded.append(sum(sizes[u] for row in rows for u in row))
        return real(tree, units, home, rows, pad_id)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(causal_scoring, "_tree_layout", counting)
        got = scoring.causal_logprobs(h, seqs, score_from=starts, max_batch_tokens=4096)
    ref = scoring.naive_causal_logprobs(h, seqs, score_from=starts)
    for g, r in zip(got, ref, strict=True):
        assert len(g) == len(r)
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)
    assert sum(forwarded) == _prefixes(seqs) < sum(len(s) for s in seqs) - 10


# --------------------------------------------------------------------------------------------
# per probe: the tree scorer against today's unshared scores (one sequence per padded row)
# --------------------------------------------------------------------------------------------


def _probe_runs(handle: Any, probe: str, data: Any, **opts: Any) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The probe's items scored by the prefix tree and by padded rows, and how many tree
    forwards ran."""
    calls: list[int] = []
    real = causal_scoring._score_tree

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(causal_scoring, "_score_tree", counting)
        tree = run_probe(probe, handle, data, progress=False, **opts).items
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(causal_scoring, "_packing_supported", lambda _h: False)
        padded = run_probe(probe, handle, data, progress=False, **opts).items
    return tree, padded, len(calls)


def _assert_same_scores(tree: pd.DataFrame, padded: pd.DataFrame) -> None:
    floats = [c for c in tree.columns if pd.api.types.is_float_dtype(tree[c])]
    assert floats and len(tree) == len(padded) > 0
    for c in floats:
        np.testing.assert_allclose(tree[c].to_numpy(), padded[c].to_numpy(), atol=1e-4, rtol=0, err_msg=c)


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
def test_probes_score_as_before(request: pytest.FixtureRequest, fixture: str, tmp_path: Path) -> None:
    h = request.getfixturevalue(fixture)
    runs = {
        "bbq": (write_jsonl(tmp_path / "b.jsonl", [_row(i, *s) for i, s in enumerate(SPEC)]), {}),
        "crows_pairs": (write_csv(tmp_path / "c.csv", PAIRS), {}),
        "stereoset": (write_dataset(tmp_path / "s.json"), {}),
        "templates": (None, {"max_items": 3}),
        "counterfactual": (None, {"max_items": 16}),
        "classifier_fairness": (_csv(tmp_path, _rows(20)), {"prompt": "Review: {text}\nSentiment:",
                                                            "label_words": {0: " bad", 1: " good"},
                                                            "n_resamples": 20, "n_permutations": 20}),
    }
    for probe, (data, opts) in runs.items():
        tree, padded, n_tree = _probe_runs(h, probe, data, **opts)
        assert n_tree > 0, probe
        _assert_same_scores(tree, padded)


@pytest.mark.slow
def test_smollm2_tree_equals_scoring_alone_on_real_bbq() -> None:
    """SmolLM2-135M on real BBQ items (both conditions, both polarities, three answers): every
    option's log-probability from the tree equals one forward per option within 1e-4."""
    from audit.models import load_model
    from probes import bbq
    from tests.conftest import shared_file

    df = bbq.load_bbq(shared_file("bbq/Age.jsonl"), max_items=24, sample="first")
    h = load_model("smollm2-135m", device="cpu")
    opts = bbq.option_table(df)
    prompts = [bbq.prompt_text(df["context"].iloc[i], df["question"].iloc[i]) for i in opts["item"]]
    conts = [" " + t for t in opts["text"]]
    got = scoring.continuation_logprobs(h, prompts, conts)
    ref = scoring.continuation_logprobs(h, prompts, conts, pack=False)
    for g, r in zip(got, ref, strict=True):
        assert len(g) == len(r) > 0
        np.testing.assert_allclose(g, r, atol=1e-4, rtol=0)
    seqs = [s for s in scoring.causal_tokenize(h, [p + c for p, c in zip(prompts, conts, strict=True)])]
    assert _prefixes(seqs) < 0.5 * sum(len(s) for s in seqs)
