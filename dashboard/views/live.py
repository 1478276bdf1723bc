"""Live page: load a demo alias or a local model folder, type a text, pick a method and a target,
and see the attribution (and the attention) — the only page that runs a model.

The model is loaded once per (model, kind) and shared through ``st.cache_resource``; explanations
on one model run one at a time (a lock), because attention methods switch the model's attention
implementation while they run. Nothing is written to the runs root.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

import streamlit as st

from audit.explain import ExplainError, InputTooLongError, explain, get_explainer, list_explainers
from audit.explain.base import GAP_WARNING
from audit.explain.targets import MODES
from audit.models import DEMO_MODELS, KINDS, ModelHandle, ModelLoadError, load_model
from dashboard import LIVE_ENV
from dashboard.explain_view import show_method
from dashboard.render import fmt, md_escape

LOCAL = "local folder"


def allowed_models() -> list[str] | None:
    """The ``--live-models`` allow-list (``None``: not restricted, a local dashboard without it)."""
    raw = os.environ.get(LIVE_ENV)
    return None if raw is None else [m.strip() for m in raw.split(",") if m.strip()]
AUTO_KIND = "(from the model's config)"
MODE_HELP = {
    "mask": "probability of a token at the [MASK]",
    "pll": "pseudo-log-likelihood of the whole sentence",
    "next": "probability of the next token",
    "generate": "each token of a greedy continuation",
    "sentence": "log-likelihood of the sentence",
    "class": "probability of a class",
    "cosine": "cosine similarity with a second text",
}
DEFAULT_PAIR = "The doctor said that he was tired."
DEFAULT_TEXT = {
    "masked-lm": "The nurse said that [MASK] was tired.",
    "causal-lm": "The nurse said that",
    "classifier": "The nurse said that she was tired.",
    "encoder": "The nurse said that she was tired.",
}


@st.cache_resource(show_spinner=False, max_entries=2)
def load_cached(name: str, kind: str | None) -> ModelHandle:
    # a folder typed into the page never runs its own code nor unpickles weights
    return load_model(name, kind=kind, device="auto", trust_remote_code=False, allow_pickle=False)


@st.cache_resource(show_spinner=False)
def model_lock(name: str, kind: str | None) -> threading.Lock:
    return threading.Lock()


def option_inputs(method: str) -> dict[str, Any]:
    """Number / checkbox inputs for the method's own numeric and boolean options."""
    ex = get_explainer(method)
    out: dict[str, Any] = {}
    simple = {k: v for k, v in ex.options.defaults().items() if isinstance(v, (bool, int, float)) and v is not None}
    if not simple:
        return out
    with st.expander(f"Options of {md_escape(method)}"):
        for k, v in simple.items():
            key = f"live_opt:{method}:{k}"
            if isinstance(v, bool):
                out[k] = st.checkbox(k, value=v, key=key)
            elif isinstance(v, int):
                out[k] = int(st.number_input(k, value=v, step=1, key=key))
            else:
                out[k] = float(st.number_input(k, value=float(v), key=key, format="%g"))
    return out


def target_inputs(handle: ModelHandle) -> dict[str, Any] | None:
    """The target dict for :func:`audit.explain.explain`; None when a required field is empty."""
    modes = MODES[handle.kind]
    mode = st.selectbox("Target", modes, key="live_mode", format_func=lambda m: f"{m} — {MODE_HELP.get(m, '')}")
    target: dict[str, Any] = {"mode": mode}
    if mode in ("mask", "next"):
        tok = st.text_input("Token to explain (empty: the model's top prediction); kept as typed, so a "
                            "leading space is part of it (\" she\" and \"she\" are different tokens)",
                            key="live_token")
        if tok.strip():
            target["token"] = tok  # as typed: stripping " she" would explain another token
            token_ids(handle, tok)
    elif mode == "generate":
        target["max_new_tokens"] = int(st.number_input("Tokens to generate", 1, 64, 5, key="live_new_tokens"))
    elif mode == "class":
        cls = st.text_input("Class index or label (empty: the predicted class)", key="live_class")
        if cls.strip():
            target["class"] = int(cls) if cls.strip().lstrip("-").isdigit() else cls.strip()
    elif mode == "cosine":
        st.session_state.setdefault("live_pair", DEFAULT_PAIR)
        pair = st.text_input("Second text (the target is the cosine similarity of the two texts)", key="live_pair")
        if not pair.strip():
            st.info("Type a second text: the target is the cosine similarity of the two texts.")
            return None
        target["pair"] = pair
    return target


def token_ids(handle: ModelHandle, tok: str) -> None:
    """Show which token id(s) the typed token is, and warn when it is not a single token."""
    ids = handle.tokenizer.encode(tok, add_special_tokens=False)
    pieces = handle.tokenizer.convert_ids_to_tokens(ids)
    st.caption("Token: " + ", ".join(f"{md_escape(repr(p))} (id {i})" for p, i in zip(pieces, ids, strict=True)))
    if len(ids) != 1:
        st.warning(f"{md_escape(repr(tok))} is {len(ids)} tokens for this tokenizer; the target is its first "
                   "token. Type a single token (with its leading space if the word follows another).")


def valid_methods(kind: str, mode: str) -> list[str]:
    """The explainers that take this model kind and target mode."""
    explainers = {m: get_explainer(m) for m in list_explainers()}
    return [m for m, ex in explainers.items() if kind in ex.kinds and (ex.modes is None or mode in ex.modes)]


def live_metrics(res: dict[str, Any]) -> None:
    st.markdown(f"**Target**: {md_escape(res['target'])}")
    st.caption(f"{md_escape(res['method'])} took {res['duration']:.2f} s")
    gaps = [g for g in res["gaps"] if g == g]  # drop NaN
    if gaps:
        worst = max(gaps)
        st.metric("IG completeness gap", fmt(100 * worst, "%"),
                  help="|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)| (Sundararajan et al. 2017)")
        if worst > GAP_WARNING and not any("completeness gap" in w for w in res["warnings"]):
            st.warning(f"The completeness gap exceeds {100 * GAP_WARNING:.0f}%: raise max_steps (or n_steps with "
                       "adaptive off) before trusting these scores.")
    for w in res["warnings"]:
        st.warning(md_escape(w))


def run_explain(handle: ModelHandle, model_key: tuple[str, str | None], text: str, method: str,
                target: dict[str, Any], opts: dict[str, Any], with_attention: bool) -> None:
    results = []
    methods = [method] + (["attention"] if with_attention and method != "attention" else [])
    with model_lock(*model_key):
        for m in methods:
            with st.spinner(f"Explaining with {m}…"):
                a = explain(handle, [text], method=m, target=target, **(opts if m == method else {}))
            results.append({"method": m, "frame": a.to_frame(), "gaps": a.completeness_gaps().tolist(),
                            "warnings": list(a.warnings), "duration": a.duration_s,
                            "target": a.examples[0].target if len(a) else ""})
    st.session_state["live_result"] = {"inputs": {"model": model_key[0], "text": text, "target": target},
                                       "results": results}


st.title("Live")
st.caption("Loads a model on this machine and explains a text you type. Nothing is written to the runs root.")
allowed = allowed_models()
if allowed is not None and not allowed:
    st.warning("The Live page is off on this shared dashboard: it loads only the models listed at start "
               "(taudit dashboard … --live-models smollm2-135m,./my-model).")
    st.stop()
sources = [*DEMO_MODELS, LOCAL] if allowed is None else allowed
src = st.selectbox("Model", sources, key="live_source", index=len(sources) - 1 if allowed is None else 0,
                   format_func=lambda s: f"{s} — {DEMO_MODELS[s].description}" if s in DEMO_MODELS
                   else ("a local model folder" if s == LOCAL else s))
path = st.text_input("Local model folder", key="live_path") if src == LOCAL else ""
kind_choice = st.selectbox("Load as", [AUTO_KIND, *KINDS], key="live_kind")
kind = None if kind_choice == AUTO_KIND else kind_choice
if st.button("Load model", key="live_load"):
    name = src
    if allowed is not None and src not in allowed:  # the widget offers only these; refuse anything else
        st.error(f"{md_escape(src)} is not on this dashboard's --live-models list.")
        st.stop()
    if src == LOCAL or (allowed is not None and src not in DEMO_MODELS):
        folder = path if src == LOCAL else src
        p = Path(folder.strip()).expanduser()
        if not folder.strip() or not p.is_dir():
            st.error(f"{md_escape(folder or '(empty)')} is not a folder. Give the folder that holds config.json "
                     "and the safetensors weights.")
            st.stop()
        name = str(p.resolve())
    try:
        with st.spinner(f"Loading {name}… (a demo model's first load converts it, which takes a while)"):
            load_cached(name, kind)
    except (ModelLoadError, OSError, ValueError) as exc:
        st.error(f"Could not load {md_escape(name)}: {md_escape(exc)}")
        st.stop()
    st.session_state["live_model"] = (name, kind)
    st.session_state.pop("live_result", None)

model_key = st.session_state.get("live_model")
if not model_key:
    st.info("Load a model to start.")
    st.stop()
handle = load_cached(*model_key)
ident = handle.identity()
st.success(f"Loaded {md_escape(handle.name)} — {handle.kind}, {ident.get('parameters', 0):,} parameters, "
           f"{handle.device}, {str(handle.dtype).replace('torch.', '')}")

st.session_state.setdefault("live_text", DEFAULT_TEXT.get(handle.kind, ""))
text = st.text_area("Text", key="live_text")
target = target_inputs(handle)
methods = valid_methods(handle.kind, target["mode"] if target else MODES[handle.kind][0])
method = st.selectbox("Method", methods, key="live_method", index=methods.index("ig") if "ig" in methods else 0,
                      format_func=lambda m: f"{m} — {get_explainer(m).description}")
opts = option_inputs(method)
with_attention = st.checkbox("Also show the attention of every layer and head", value=True, key="live_attention")
if st.button("Explain", key="live_explain", type="primary", disabled=target is None or not text.strip()):
    try:
        run_explain(handle, model_key, text, method, target or {}, opts, with_attention)
    except (ExplainError, InputTooLongError, ValueError) as exc:
        st.error(f"{md_escape(type(exc).__name__)}: {md_escape(exc)}")
        st.stop()

res = st.session_state.get("live_result")
if res:
    st.caption("Result for: " + md_escape(f"{res['inputs']['text']!r} with target {res['inputs']['target']}"))
    for r in res["results"]:
        show_method(r["method"], r["frame"], f"live:{r['method']}", partial(live_metrics, r))
