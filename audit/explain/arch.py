"""Per-architecture facts the attention explainers need, kept as data (inseq style).

Two hooks work on every listed architecture without touching model code:

* :func:`capture_attention` — a forward hook on the self-attention module of each *requested*
  layer keeps that layer's attention weights (optionally only some heads, or their mean), so
  long inputs do not hold every layer's ``(heads × T × T)`` tensor at once. The weights only
  exist under eager attention: call it inside ``with handle.attentions():``.
* :func:`head_gates` — a forward pre-hook on each layer's attention output projection scales the
  concatenated per-head outputs by a gate ξₕ (all ones), so ∂loss/∂ξₕ is the head importance of
  Michel et al. (2019). transformers 5 dropped ``head_mask``; the output projection's input is
  the concatenation of head outputs in every architecture below, so one hook serves them all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from audit.models import ModelHandle


class ArchitectureNotSupportedError(ValueError):
    """An architecture whose attention modules this package does not know."""


@dataclass(frozen=True)
class ArchSpec:
    """Dotted attribute paths, relative to ``model.base_model``."""

    layers: str  # the ModuleList of transformer blocks
    attention: str  # inside a block: the module returning (attn_output, attn_weights)
    out_proj: str  # inside a block: the linear map applied to the concatenated head outputs
    mlp: str  # inside a block: the MLP's output module (:mod:`audit.explain.intervene`)
    #: the final norm (``None``: post-LN encoders, whose layer outputs are already normalised)
    final_norm: str | None


_BERT = ArchSpec("encoder.layer", "attention.self", "attention.output.dense", "output.dense", None)
_LLAMA = ArchSpec("layers", "self_attn", "self_attn.o_proj", "mlp", "norm")

ARCH_SPECS: dict[str, ArchSpec] = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert"), _BERT),
    "gpt2": ArchSpec("h", "attn", "attn.c_proj", "mlp", "ln_f"),
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"), _LLAMA),
}


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def arch_spec(handle: ModelHandle) -> ArchSpec:
    model_type = getattr(handle.model.config, "model_type", "")
    spec = ARCH_SPECS.get(model_type)
    if spec is None:
        raise ArchitectureNotSupportedError(
            f"attention explainers and interventions do not know the layout of model_type {model_type!r} "
            f"({handle.name}); known: {', '.join(sorted(ARCH_SPECS))}. Add an ArchSpec to "
            "audit.explain.arch.ARCH_SPECS"
        )
    return spec


def blocks(handle: ModelHandle) -> list[torch.nn.Module]:
    return list(_get(handle.model.base_model, arch_spec(handle).layers))


def n_layers(handle: ModelHandle) -> int:
    return len(blocks(handle))


def n_heads(handle: ModelHandle) -> int:
    cfg = handle.model.config
    n = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    if not n:
        raise ArchitectureNotSupportedError(f"{handle.name}: config has no num_attention_heads")
    return int(n)


def is_causal(handle: ModelHandle) -> bool:
    """Whether the model's self-attention is causal (decoder), read from its attention modules."""
    try:
        att = _get(blocks(handle)[0], arch_spec(handle).attention)
        flag = getattr(att, "is_causal", None)
        if flag is not None:
            return bool(flag)
    except ArchitectureNotSupportedError:
        pass
    return handle.kind == "causal-lm"


def resolve_selection(value: Sequence[int] | int | None, total: int, what: str) -> list[int]:
    """Normalise a layer/head selection (negative indices allowed) and range-check it."""
    if value is None:
        return list(range(total))
    vals = [value] if isinstance(value, int) else list(value)
    out = []
    for v in vals:
        if not isinstance(v, int) or not -total <= v < total:
            raise ValueError(f"{what} {v!r} out of range: the model has {total} {what}s (0..{total - 1})")
        out.append(v % total)
    if not out:
        raise ValueError(f"empty {what} selection")
    return sorted(set(out))


#: ``capture_attention(reduce=…)``: how the selected heads are fused
_REDUCE = {"mean": "mean", "max": "amax", "min": "amin"}


@contextmanager
def capture_attention(
    handle: ModelHandle,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    *,
    reduce: str | None = None,
    keep_graph: bool = False,
) -> Iterator[dict[int, torch.Tensor]]:
    """Collect attention weights of the requested layers during the forwards inside the block.

    Yields a dict ``layer -> tensor`` filled by each forward: ``(B, h, T, T)`` for the selected
    heads, or ``(B, T, T)`` with ``reduce`` in {"mean", "max", "min"} over the selected heads.
    Weights are detached unless ``keep_graph`` (gradient-weighted rollout needs ∂y/∂A).
    """
    if reduce is not None and reduce not in _REDUCE:
        raise ValueError(f"unknown head reduction {reduce!r}; use mean, max or min")
    spec = arch_spec(handle)
    layer_mods = blocks(handle)
    sel = resolve_selection(layers, len(layer_mods), "layer")
    head_idx = None if heads is None else resolve_selection(heads, n_heads(handle), "head")
    store: dict[int, torch.Tensor] = {}

    def make_hook(layer: int):  # type: ignore[no-untyped-def]
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            w = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if w is None:
                raise RuntimeError(
                    f"{handle.name}: layer {layer} returned no attention weights "
                    f"(attn_implementation={handle.attn_implementation!r}); run inside "
                    "`with handle.attentions():`"
                )
            if not keep_graph:
                w = w.detach()
            if head_idx is not None:
                w = w[:, head_idx]
            if reduce is not None:
                w = getattr(w, _REDUCE[reduce])(1)
            store[layer] = w if keep_graph else w.float()

        return hook

    with ExitStack() as hooks:  # removed on the way out
        for layer in sel:
            hooks.callback(_get(layer_mods[layer], spec.attention).register_forward_hook(make_hook(layer)).remove)
        yield store


@contextmanager
def head_gates(handle: ModelHandle, rows: int = 1) -> Iterator[list[torch.Tensor]]:
    """One gate matrix ξ (rows, heads) of ones, requires_grad, per layer multiplying each head's output.

    Michel, Levy & Neubig (2019), "Are Sixteen Heads Really Better than One?": the importance of
    head h is |∂L/∂ξₕ| at ξ = 1. Row r of ξ gates batch row r (``rows`` = the batch size), so one
    backward of a sum of per-row losses gives every row's importance; one row gates every batch row.
    """
    spec = arch_spec(handle)
    h = n_heads(handle)
    param = next(handle.model.parameters())
    gates = [torch.ones((rows, h), device=param.device, dtype=param.dtype, requires_grad=True)
             for _ in blocks(handle)]

    def make_hook(gate: torch.Tensor):  # type: ignore[no-untyped-def]
        def pre_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            x = args[0]
            shape = x.shape
            gated = (x.reshape(shape[0], -1, h, shape[-1] // h) * gate[:, None, :, None]).reshape(shape)
            return (gated, *args[1:])

        return pre_hook

    with ExitStack() as hooks:
        for block, gate in zip(blocks(handle), gates, strict=True):
            hooks.callback(_get(block, spec.out_proj).register_forward_pre_hook(make_hook(gate)).remove)
        yield gates
