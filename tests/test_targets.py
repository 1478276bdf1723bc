"""Attribution targets as classes (audit.explain.targets): the tables are derived from the registered
classes, a (kind, mode) registers once, every class names a bad field, and the shared forward
(``logits_at`` through :func:`audit.scoring.output_head`) reads the model's own logits."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from audit.explain import targets
from audit.explain.errors import TargetError
from audit.explain.targets import MODES, TARGET_KEYS, TARGETS, ClassLabel, prepare, register_target
from audit.registry import DuplicateNameError
from audit.scoring import output_head

FIXTURE = {"masked-lm": "bert_mlm", "causal-lm": "gpt2", "classifier": "bert_classifier", "encoder": "bert_encoder"}
TEXT = "the doctor said that [MASK] was late"


def test_tables_are_derived_from_the_registered_classes() -> None:
    assert all(key == (cls.kind, cls.mode) for key, cls in TARGETS.items())
    kinds = {cls.kind for cls in TARGETS.values()}
    assert MODES == {k: tuple(c.mode for c in TARGETS.values() if c.kind == k) for k in kinds}
    assert TARGET_KEYS == {k: frozenset({"mode"}).union(*(c.keys for c in TARGETS.values() if c.kind == k))
                           for k in kinds}
    # the tables the explainers, the CLI and the dashboard were written against (default mode first)
    assert MODES == {"masked-lm": ("mask", "pll"), "causal-lm": ("next", "generate", "sentence"),
                     "classifier": ("class",), "encoder": ("cosine",)}
    assert TARGET_KEYS == {
        "masked-lm": {"mode", "mask_index", "token", "contrast", "output"},
        "causal-lm": {"mode", "token", "contrast", "output", "max_new_tokens", "continuation", "attribute_generated"},
        "classifier": {"mode", "class", "output"},
        "encoder": {"mode", "pair", "pooling"},
    }


def test_a_registered_class_extends_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TARGETS", "MODES", "TARGET_KEYS"):
        monkeypatch.setattr(targets, name, dict(getattr(targets, name)))

    @register_target
    class Margin(ClassLabel):
        mode = "margin"
        keys = frozenset({"class", "versus"})

    assert targets.TARGETS["classifier", "margin"] is Margin
    assert targets.MODES["classifier"] == ("class", "margin")  # the default stays first
    assert targets.TARGET_KEYS["classifier"] == {"mode", "class", "output", "versus"}
    assert targets.target_mode("classifier", {"mode": "margin"}) == "margin"
    assert MODES["classifier"] == ("class",)  # the module's own tables are untouched


def test_registering_a_kind_and_mode_twice_raises() -> None:
    before = (dict(TARGETS), dict(MODES), dict(TARGET_KEYS))
    with pytest.raises(DuplicateNameError, match=r"'class' of classifier models is registered twice: by "
                                                 r"ClassLabel and by .*Again"):
        @register_target
        class Again(ClassLabel):
            keys = frozenset({"class", "other"})
    assert (TARGETS, MODES, TARGET_KEYS) == before  # a refused class leaves no trace


def _handle(kind: str, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(FIXTURE[kind])


@pytest.mark.parametrize("kind,mode", sorted(TARGETS))
def test_unknown_key_is_named_for_every_registered_class(kind: str, mode: str, request: pytest.FixtureRequest
                                                         ) -> None:
    handle = _handle(kind, request)
    with pytest.raises(TargetError, match=r"unknown target field\(s\) \['colour'\] for a " + kind) as err:
        prepare(handle, TEXT, {"mode": mode, "colour": "red"})
    assert all(k in str(err.value) for k in TARGETS[kind, mode].keys)  # the allowed keys are listed


@pytest.mark.parametrize("kind,mode,key", sorted((k, m, key) for (k, m), c in TARGETS.items() for key in c.keys))
def test_bad_value_of_every_key_is_named(kind: str, mode: str, key: str, request: pytest.FixtureRequest) -> None:
    handle = _handle(kind, request)
    with pytest.raises(TargetError) as err:
        prepare(handle, TEXT, {"mode": mode, key: ["not", "a", "value"]})
    assert re.search(rf"\b{key}\b", str(err.value)), str(err.value)


def test_output_head_is_the_models_own_head(bert_mlm, gpt2, bert_classifier, bert_encoder) -> None:  # type: ignore[no-untyped-def]
    assert output_head(bert_mlm) is bert_mlm.model.cls
    assert output_head(gpt2) is gpt2.model.get_output_embeddings()
    assert output_head(bert_classifier) is None and output_head(bert_encoder) is None


@pytest.mark.parametrize("kind", ["masked-lm", "causal-lm", "classifier"])
def test_logits_at_reads_the_models_logits(kind: str, request: pytest.FixtureRequest) -> None:
    handle = _handle(kind, request)
    p = prepare(handle, TEXT)[0]
    fn: targets.Target = p.fn
    with torch.no_grad():
        full = handle.model(input_ids=p.ids[None], attention_mask=p.attn()[None]).logits
        emb = targets.embed_ids(handle, p.ids[None])
        if kind == "classifier":
            torch.testing.assert_close(fn.logits_at(emb, p.attn()[None]), full)
        else:
            pos = torch.tensor([p.query_rows[0]])  # type: ignore[index]
            torch.testing.assert_close(fn.logits_at(emb, p.attn()[None], torch.tensor([0]), pos), full[0, pos])
            torch.testing.assert_close(fn.logits_at(emb, p.attn()[None]), full)


@pytest.mark.parametrize("kind", ["masked-lm", "causal-lm"])
def test_top_prediction_targets_share_one_forward(kind: str, request: pytest.FixtureRequest) -> None:
    """The default token target (the model's top prediction) of texts of different lengths comes
    from one padded forward, and is each text's own argmax of the model's logits."""
    handle = _handle(kind, request)
    texts = [TEXT, "the nurse said that [MASK] was very late", "a pilot said that [MASK] was late",
             "the teacher told us that [MASK] was quite late"]
    if kind == "causal-lm":
        texts = [t.replace(" [MASK]", "") for t in texts]
    calls: list[int] = []
    hook = handle.model.base_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        preps = prepare(handle, texts)
    finally:
        hook.remove()
    assert max(p.length for p in preps) > min(p.length for p in preps)  # padding is exercised
    assert len(calls) == 1
    for p in preps:
        with torch.no_grad():
            logits = handle.model(input_ids=p.ids[None]).logits[0, p.query_rows[0]]  # type: ignore[index]
        assert int(p.aux[1][0]) == int(logits.argmax())
        assert p.info["target_token"] == handle.tokenizer.decode([int(logits.argmax())])


def test_generation_target_is_the_greedy_continuation(gpt2) -> None:  # type: ignore[no-untyped-def]
    """The generated tokens are the argmax chain of full forwards (the KV-cached ``generate`` the
    target uses must not change them), with one target per new token at its position."""
    p = prepare(gpt2, ["the doctor said that"], {"mode": "generate", "max_new_tokens": 5})[0]
    src = p.info["source_length"]
    x = p.ids[None, :src]
    with torch.no_grad():
        while x.shape[1] < p.length:
            x = torch.cat([x, gpt2.model(input_ids=x).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert x[0].tolist() == p.ids.tolist()
    assert p.target_positions == list(range(src, p.length)) and p.n_targets == p.length - src


def test_a_key_of_another_mode_is_refused_naming_the_mode_that_reads_it(gpt2) -> None:  # type: ignore[no-untyped-def]
    """``max_new_tokens`` is a causal-LM key, but only generation reads it: on a next-token target it
    would be ignored, so it is refused, naming the mode that reads it."""
    with pytest.raises(TargetError, match=r"\['max_new_tokens'\] do nothing for mode 'next'.*'generate'"):
        prepare(gpt2, "the doctor", {"mode": "next", "max_new_tokens": 4})
    with pytest.raises(TargetError, match=r"\['token'\] do nothing for mode 'generate'.*'next'"):
        prepare(gpt2, "the doctor", {"mode": "generate", "token": " a"})
    assert prepare(gpt2, "the doctor", {"mode": "next", "token": " a", "output": "logprob"})[0].n_targets == 1
