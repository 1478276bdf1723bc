"""Read and write a model's internal activations with forward hooks on its own Hugging Face modules.

No architecture is re-implemented (TransformerLens does; this layer does not): every site is the
input or output of a module the model already has, found from :data:`audit.explain.arch.ARCH_SPECS`
(whose MLP and final-norm paths are the interventions' own).

Sites, named ``(kind, layer)``:

* ``"resid"`` — the residual stream after block ``layer`` (the block's output);
* ``"heads"`` — each attention head's output: the input of the attention output projection
  (``o_proj`` / ``c_proj`` / ``attention.output.dense``), the concatenation of the heads, seen as
  ``(batch, tokens, heads, head_dim)``;
* ``"attn"`` — the same tensor as ``"heads"`` as one ``(batch, tokens, heads·head_dim)`` block
  (all heads of a layer together);
* ``"mlp"`` — the MLP's contribution to the residual stream (``mlp`` in GPT-2 / Llama / Gemma;
  BERT and RoBERTa: ``output.dense``, before the residual add and LayerNorm).

:func:`intervene` installs read and write hooks for the forwards inside its block; a write is a
function of the activation that returns its replacement (patching, ablation). :func:`readout`
maps a residual vector to vocabulary logits as the model's own head does (final norm and
unembedding for causal LMs, the MLM head for masked LMs) — the logit lens.

Supported: BERT, RoBERTa (XLM-R, CamemBERT), GPT-2, Llama (SmolLM2), Mistral, Qwen2/3, Gemma 2 and
Gemma 3; others raise :class:`~audit.explain.arch.ArchitectureNotSupportedError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import torch

from audit.explain.arch import ArchitectureNotSupportedError, _get, arch_spec, blocks, n_heads
from audit.scoring import output_head

if TYPE_CHECKING:
    from audit.explain.arch import ArchSpec
    from audit.models import ModelHandle

KINDS = ("resid", "heads", "attn", "mlp")
Site = tuple[str, int]
#: a write: the activation in, its replacement (same shape) out
Edit = Callable[[torch.Tensor], torch.Tensor]


def mech_spec(handle: ModelHandle) -> ArchSpec:
    """The intervention paths of ``handle``'s architecture, or a clear error (an unknown layout, or
    a model that predicts no tokens)."""
    spec = arch_spec(handle)
    if handle.kind not in ("causal-lm", "masked-lm"):
        raise ArchitectureNotSupportedError(
            f"interventions read out token predictions and need a causal or masked LM; {handle.name} is a {handle.kind}"
        )
    return spec


def check_sites(handle: ModelHandle, sites: Iterable[Site]) -> list[Site]:
    """Validate ``(kind, layer)`` pairs (kind known, layer in range); returns them as a list."""
    mech_spec(handle)
    n = len(blocks(handle))
    out = []
    for kind, layer in sites:
        if kind not in KINDS:
            raise ValueError(f"unknown site kind {kind!r}; use one of {KINDS}")
        if not isinstance(layer, int) or not 0 <= layer < n:
            raise ValueError(f"layer {layer!r} out of range: {handle.name} has {n} layers (0..{n - 1})")
        out.append((kind, layer))
    return out


@contextmanager
def intervene(
    handle: ModelHandle, *, read: Iterable[Site] = (), write: Mapping[Site, Edit] | None = None
) -> Iterator[dict[Site, torch.Tensor]]:
    """Hooks for the forwards inside the block: each site in ``write`` has its activation replaced
    by ``write[site](activation)``, then each site in ``read`` is stored (after any write) in the
    yielded dict, detached. ``"heads"`` activations are ``(B, T, heads, head_dim)``, the others
    ``(B, T, d)``. ``"heads"`` and ``"attn"`` of one layer are the same tensor: when both are
    written (different batch rows), the ``"heads"`` write runs first."""
    write = dict(write or {})
    reads = set(check_sites(handle, read))
    check_sites(handle, write)
    h = n_heads(handle)
    store: dict[Site, torch.Tensor] = {}

    def apply(layer: int, kinds: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
        for kind in kinds:
            fn = write.get((kind, layer))
            if fn is not None:
                view = x.reshape(*x.shape[:-1], h, x.shape[-1] // h) if kind == "heads" else x
                new = fn(view)
                if new.shape != view.shape:
                    raise ValueError(f"write at ({kind!r}, {layer}) returned shape {tuple(new.shape)}, "
                                     f"expected {tuple(view.shape)}")
                x = new.reshape(x.shape)
            if (kind, layer) in reads:
                store[(kind, layer)] = (x.reshape(*x.shape[:-1], h, x.shape[-1] // h) if kind == "heads" else x).detach()
        return x

    def out_hook(layer: int, kind: str):  # type: ignore[no-untyped-def]
        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            x = output[0] if isinstance(output, tuple) else output
            y = apply(layer, (kind,), x)
            if y is x:
                return None
            return (y, *output[1:]) if isinstance(output, tuple) else y

        return hook

    def pre_hook(layer: int):  # type: ignore[no-untyped-def]
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> Any:
            x = args[0]
            y = apply(layer, ("heads", "attn"), x)
            return None if y is x else (y, *args[1:])

        return hook

    sites, spec = reads | set(write), arch_spec(handle)
    with ExitStack() as hooks:  # removed on the way out
        for layer in sorted({lay for _, lay in sites}):
            kinds, block = {k for k, lay in sites if lay == layer}, blocks(handle)[layer]
            if "resid" in kinds:
                hooks.callback(block.register_forward_hook(out_hook(layer, "resid")).remove)
            if "mlp" in kinds:
                hooks.callback(_get(block, spec.mlp).register_forward_hook(out_hook(layer, "mlp")).remove)
            if kinds & {"heads", "attn"}:
                hooks.callback(_get(block, spec.out_proj).register_forward_pre_hook(pre_hook(layer)).remove)
        yield store


def readout(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor]:
    """Residual vectors ``(N, d)`` → vocabulary logits ``(N, V)`` through the model's own head:
    final norm and unembedding (with Gemma's logit soft-capping) for causal LMs, the MLM head
    (transform + decoder) for masked LMs. Applied to a middle layer's residual this is the logit
    lens (nostalgebraist 2020, "interpreting GPT: the logit lens")."""
    spec = mech_spec(handle)
    head = _head(handle)
    if handle.kind == "masked-lm" or spec.final_norm is None:
        return head
    norm = _get(handle.model.base_model, spec.final_norm)
    return lambda x: head(norm(x))


def final_hidden(handle: ModelHandle, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The base model's last hidden state (final norm applied for causal LMs): the input of the
    head, without computing logits for every position."""
    out = handle.model.base_model(input_ids=input_ids, attention_mask=attention_mask)
    return out[0] if isinstance(out, tuple) else out.last_hidden_state


def head_logits(handle: ModelHandle, hidden: torch.Tensor) -> torch.Tensor:
    """Logits from :func:`final_hidden` vectors ``(N, d)`` (the norm is already applied)."""
    return _head(handle)(hidden)


def _head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor]:
    """The LM's output head (:func:`audit.scoring.output_head`), or a clear error when none is known."""
    head = output_head(handle)
    if head is None:
        raise ArchitectureNotSupportedError(f"{handle.name}: no known MLM head on {type(handle.model).__name__}")
    return head


__all__ = ["KINDS", "ArchitectureNotSupportedError", "Edit", "Site", "check_sites",
           "final_hidden", "head_logits", "intervene", "mech_spec", "readout"]
