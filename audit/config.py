"""The audit config (YAML): which models, which probes and explainers, seed, output, policy.

Example::

    seed: 0
    output: runs
    models:
      - name: smollm2-135m          # demo alias, local folder or hub id
        kind: causal-lm             # optional: inferred from the config's architectures
      - name: minilm-l6
    probes:
      - probe: crows_pairs
        data: ../shared/data/crows-pairs/crows_pairs_anonymized.csv   # relative to this file
        options: {max_items: 200}
      - seat                        # shorthand: built-in data, default options
    explain:
      - name: why
        methods: [ig, rollout]
        texts: ["The nurse said she would help."]
    policy:                         # or a path to a policy YAML file
      - check: crows_pairs.pct_stereotype within 45..55
        severity: fail
    report:
      formats: [html, md, json]

``models: []`` audits a model's logged predictions without the model (every probe must declare a
model-free mode, :attr:`audit.probe.Probe.without_model`; today ``classifier_fairness`` with
``data:`` a predictions file). An invalid config raises :class:`ConfigError` naming the field and
the problem.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any, Literal, overload

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from audit.errors import OptionsError, brief, located


class ConfigError(ValueError):
    """An invalid audit config; the message names the field."""


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. (YAML 1.1 reads a policy's ``on: ci`` key as ``True``.)
    A key repeated in one mapping is an error (PyYAML would keep the last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" merges are overridden on purpose
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class names it
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears more than once in one mapping (only the last would be "
                    "read); remove or merge the repeated key", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def yaml_load(text: str) -> Any:
    """Parse YAML with YAML 1.2 booleans (``on``/``off``/``yes``/``no`` stay strings) and no
    repeated keys."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  # nosec B506  # _Loader is a SafeLoader subclass


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="demo alias, local folder or hub id")
    kind: Literal["masked-lm", "causal-lm", "encoder", "classifier"] | None = None
    dtype: Literal["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"] = "auto"
    device: str = "auto"
    device_map: str | None = None
    revision: str | None = None
    # security switches: only a YAML/JSON `true` turns them on (not "yes", "on" or 1)
    allow_pickle: StrictBool = False
    trust_remote_code: StrictBool = False
    label: str | None = Field(default=None, description="short name used in run-directory names")

    @property
    def slug(self) -> str:
        base = self.label or Path(self.name.rstrip("/")).name or self.name
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in base)


class ProbeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe: str = Field(min_length=1)
    name: str | None = Field(default=None, description="instance name (folder under probes/)")
    data: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    models: list[str] | None = Field(default=None, description="run only on these model names")
    chunk_size: int | None = Field(default=None, ge=1, description="items per checkpoint / shard chunk")

    @property
    def instance(self) -> str:
        return self.name or self.probe


class ReportSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    formats: list[Literal["html", "pdf", "md", "json"]] = ["html", "md", "json"]  # pydantic copies it per instance
    enabled: bool = True


class DistributedSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "gloo", "nccl"] = "auto"


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    output: str = "runs"
    #: empty: a model-free audit of logged outputs (every probe must have a ``without_model`` mode;
    #: :func:`check_names` says which does not)
    models: list[ModelSpec]
    probes: list[ProbeSpec] = Field(default_factory=list)
    explain: list[dict[str, Any]] = Field(default_factory=list)
    policy: str | list[Any] | dict[str, Any] | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)
    distributed: DistributedSpec = Field(default_factory=DistributedSpec)
    #: folder relative paths are resolved against (the config file's folder)
    base_dir: str | None = Field(default=None, exclude=True)

    @field_validator("models", "probes", mode="before")
    @classmethod
    def _shorthand(cls, v: Any, info: ValidationInfo) -> Any:
        """``- seat`` for ``- probe: seat``, ``- minilm-l6`` for ``- name: minilm-l6``."""
        key = "name" if info.field_name == "models" else "probe"
        return [{key: x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _unique_instances(self) -> AuditConfig:
        twice = [n for n, k in Counter(p.instance for p in self.probes).items() if k > 1]
        if twice:
            raise ValueError(f"probe instance name {twice[0]!r} is used twice; give one a distinct 'name'")
        slugs = [m.slug for m in self.models]
        if len(set(slugs)) != len(slugs):
            raise ValueError("two models share a run-directory name; give them distinct 'label's")
        return self

    @overload
    def resolve(self, path: str) -> str: ...
    @overload
    def resolve(self, path: None) -> None: ...
    def resolve(self, path: str | None) -> str | None:
        """A data path made absolute against the config's folder (``None`` stays ``None``)."""
        if path is None:
            return None
        return str(Path(self.base_dir or "") / Path(path).expanduser())  # an absolute path stays as it is

    def resolve_data(self, data: str | None) -> str | None:
        """A probe's ``data``: a path (as :meth:`resolve`), or the name of a dataset fetched with
        ``taudit data fetch`` (``crows_pairs``) when no file of that name exists."""
        if data is None or Path(self.resolve(data)).exists():
            return self.resolve(data)
        from audit.catalogue import resolve_data

        return self.resolve(resolve_data(data))

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_config(data: Any, *, source: str = "<dict>", base_dir: str | Path | None = None) -> AuditConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid audit config {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = AuditConfig.model_validate({**data, "base_dir": str(base_dir) if base_dir else None})
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid audit config {source}:\n" + "\n".join(lines)) from None
    check_names(cfg, source)
    return cfg


def read_yaml_file(path: str | Path, what: str, error: type[Exception]) -> Any:
    """Parse a UTF-8 YAML file (BOM and CRLF accepted) with :func:`yaml_load`; ``error`` names the
    file, and the line and column for a syntax error or a repeated key."""
    from audit.datafiles import read_text_file

    p = Path(path)
    text = read_text_file(p, what=what, error=error)
    if not text.strip():
        raise error(f"{p}: the file is empty; expected a YAML {what}")
    try:
        return yaml_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{p} is not valid YAML: {str(exc).replace('<unicode string>', p.name)}") from None
    except RecursionError:
        raise error(f"{p}: YAML nested too deeply to read") from None


def load_config(path: str | Path) -> AuditConfig:
    """Read and validate a YAML audit config."""
    p = Path(path)
    data = read_yaml_file(p, "audit config", ConfigError)
    return parse_config(data, source=str(p), base_dir=p.resolve().parent)


def default_config() -> AuditConfig:
    """The embedded default audit on the demo models (no data downloads)."""
    text = resources.files("audit").joinpath("default_audit.yaml").read_text(encoding="utf-8")
    return parse_config(yaml_load(text), source="(embedded default audit)")


def profiles() -> list[str]:
    """Names of the shipped audit profiles (``audit/profile_<name>.yaml``)."""
    return sorted(f.name[len("profile_"):-len(".yaml")] for f in resources.files("audit").iterdir()
                  if f.name.startswith("profile_") and f.name.endswith(".yaml"))


def profile_config(name: str) -> AuditConfig:
    """A shipped audit profile (``taudit run --profile tr``); its relative data paths are read
    against the current folder (a checkout beside ``../shared``)."""
    if name not in profiles():
        raise ConfigError(f"unknown profile {name!r}; shipped profiles: {', '.join(profiles())}")
    text = resources.files("audit").joinpath(f"profile_{name}.yaml").read_text(encoding="utf-8")
    return parse_config(yaml_load(text), source=f"(profile {name})", base_dir=Path.cwd())


def _looks_local(name: str) -> bool:
    """A model name written as a path (``./my-bert``, ``/models/x``, ``~/m``, ``C:\\m``), not a
    demo alias or a hub id (``org/name``)."""
    return name.startswith((".", "/", "~", "\\")) or (len(name) > 2 and name[1] == ":")


def check_paths(cfg: AuditConfig, source: str) -> None:
    """Every file and local model folder the config names exists; the error names the field.

    ``taudit validate`` calls this (``taudit run`` finds a missing file when the probe starts and
    records it, so the other probes still run). Hub ids and demo aliases are not checked: they
    need the network or an installed package.
    """
    problems = []
    for i, m in enumerate(cfg.models):
        if _looks_local(m.name) and not Path(cfg.resolve(m.name)).exists():
            problems.append(f"models.{i}.name: model folder {cfg.resolve(m.name)} does not exist")
    for i, p in enumerate(cfg.probes):
        try:
            data = cfg.resolve_data(p.data)
        except ValueError as exc:  # a dataset name that was not fetched
            problems.append(f"probes.{i}.data: {exc}")
            continue
        if data is not None and not Path(data).exists():
            problems.append(f"probes.{i}.data: file {data} does not exist (probe {p.instance!r})")
    for i, spec in enumerate(cfg.explain):
        data = spec.get("data")
        if isinstance(data, str) and not Path(cfg.resolve(data)).exists():
            problems.append(f"explain.{i}.data: file {cfg.resolve(data)} does not exist")
    pol = cfg.policy
    if isinstance(pol, str) and pol.strip() != "recommended" and not Path(cfg.resolve(pol)).is_file():
        problems.append(f"policy: policy file {cfg.resolve(pol)} does not exist")
    if problems:
        raise ConfigError(f"invalid audit config {source}:\n  " + "\n  ".join(problems))


def _encoder_pairs(i: int, spec: dict[str, Any], models: list[ModelSpec]) -> list[tuple[str, str]]:
    """A sentence encoder's explain target is the cosine similarity of a text with a second one:
    single ``texts`` without ``target: {pair: ...}`` cannot run on a model declared (``kind``) or
    known (a demo alias) to be an encoder."""
    from audit.models import DEMO_MODELS

    texts, target, only = spec.get("texts"), spec.get("target"), spec.get("models")
    if not isinstance(texts, list) or (isinstance(target, dict) and target.get("pair")):
        return []
    single = [n for n, t in enumerate(texts) if isinstance(t, str)]
    encoders = [m.name for m in models if (not isinstance(only, list) or m.name in only)
                and (m.kind or getattr(DEMO_MODELS.get(m.name), "kind", None)) == "encoder"]
    if not single or not encoders:
        return []
    return [(f"explain.{i}.texts", f"texts {single} have no second text, but the target of sentence encoder(s) "
             f"{encoders} is the similarity with one; give [text, pair] items or target: {{pair: ...}}, or "
             "name the other models under 'models'")]


def check_names(cfg: AuditConfig, source: str) -> None:
    """Probe names, probe options (each probe's ``Options``, which become ``p.options`` as
    validated) and explain specs checked against what is registered; every problem is listed."""
    from audit.explain import validate_explain_spec
    from audit.probe import PROBES
    from audit.registry import UnknownNameError

    found: list[tuple[str, str]] = []
    names = {m.name for m in cfg.models}
    need_model: list[str] = []  # probes without a model-free mode, when 'models' is empty

    def where(i: int, loc: str) -> str:
        return f"probes.{i}.data" if loc == "data" else f"probes.{i}.options.{loc}".rstrip(".")

    for i, p in enumerate(cfg.probes):
        try:
            cls = PROBES.get(p.probe)
        except UnknownNameError as exc:
            found.append((f"probes.{i}.probe", str(exc)))
            continue
        try:
            p.options = cls.parse_options(p.options, p.data).given()
        except OptionsError as exc:
            found += [(where(i, loc), msg) for loc, msg in exc.problems]
        if not cfg.models:  # a model-free audit: the probe reads logged outputs, or it cannot run
            if cls.without_model is None:
                need_model.append(p.probe)
            else:
                found += [(where(i, loc), msg) for loc, msg in cls.without_model.problems(p.options, p.data)]
        found += [(f"probes.{i}.models", f"{m!r} is not a model in 'models'") for m in p.models or [] if m not in names]
    seen: set[str] = set()  # an unnamed entry is "explain<i>", as the runner names its folder
    for i, spec in enumerate(cfg.explain):
        only = spec.get("models")
        if only is not None and (not isinstance(only, list) or not all(isinstance(m, str) for m in only)):
            found.append((f"explain.{i}.models", f"must be a list of model names, got {brief(only)}"))
        elif only is not None and [m for m in only if m not in names]:
            found.append((f"explain.{i}.models", f"{[m for m in only if m not in names]} not in 'models'"))
        try:
            validate_explain_spec({k: v for k, v in spec.items() if k != "models"})
        except OptionsError as exc:
            found += [(".".join(x for x in (f"explain.{i}", loc) if x), msg) for loc, msg in exc.problems]
        except ValueError as exc:
            found.append((f"explain.{i}", str(exc)))
        found += _encoder_pairs(i, spec, cfg.models)
        nm = spec.get("name") or f"explain{i}"
        if isinstance(nm, str) and nm in seen:
            found.append((f"explain.{i}.name", f"{nm!r} is used twice"))
        seen.add(str(nm))
    if not cfg.models:
        missing = list(dict.fromkeys(need_model))
        why = (f"{', '.join(missing)} need{'s' if len(missing) == 1 else ''} one" if missing
               else "" if cfg.probes else "the config lists no probes")
        if why:
            found.insert(0, ("models", f"an empty list needs probes that run without a model; {why}"))
        if cfg.explain:
            found.append(("explain", "explain steps need a model; 'models' is empty"))
    if found:
        raise ConfigError(f"invalid audit config {source}:\n" + "\n".join(f"  {x}" for x in located("", found)))
