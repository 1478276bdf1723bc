"""The contract every registered probe and explainer keeps (issue 14), generated from the
registries: a wrong option type, an unknown choice, a missing required ``data`` and an
out-of-range number fail in ``taudit validate``, in ``taudit run`` and in ``run(**options)``
from Python before any model loads, and the error names the field.

The bad values are found by asking each component's own options model (the first field that
refuses ``"ten"`` as a type error, ``"no-such-choice"`` as a literal error, ``-1`` as a bound
error), so a probe or explainer added later is covered without editing this file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import probes  # noqa: F401  (registers the built-in probes)
from audit import cli
from audit.errors import OptionsError, ProbeError
from audit.explain import explain, get_explainer, list_explainers
from audit.explain.errors import OptionError
from audit.probe import PROBES

TYPE_ERRORS = {"int_parsing", "float_parsing", "bool_type", "bool_parsing", "int_type", "float_type"}
BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
BAD = {"type": "ten", "choice": "no-such-choice", "range": -1}


def _first_field(model: type[BaseModel], value: Any, kinds: set[str]) -> str | None:
    """The first option of ``model`` whose validation of ``value`` fails with one of ``kinds``."""
    base = {n: "x" for n, f in model.model_fields.items() if f.is_required()}
    for name in model.model_fields:
        if name in base:
            continue
        try:
            model.model_validate({**base, name: value})
        except ValidationError as exc:
            if all(e["type"] in kinds for e in exc.errors()):
                return name
    return None


def _cases(model: type[BaseModel]) -> dict[str, str]:
    """``{"type" | "choice" | "range": field}`` for the bad values ``model`` refuses."""
    found = {"type": _first_field(model, BAD["type"], TYPE_ERRORS),
             "choice": _first_field(model, BAD["choice"], {"literal_error"}),
             "range": _first_field(model, BAD["range"], BOUND_ERRORS)}
    return {k: v for k, v in found.items() if v is not None}


PROBE_CASES = [(p, case, field) for p in PROBES.names() for case, field in _cases(PROBES.get(p).Options).items()]
EXPLAINER_CASES = [(m, case, field) for m in list_explainers()
                   for case, field in _cases(get_explainer(m).options).items()]
NEEDS_DATA = [p for p in PROBES.names() if PROBES.get(p).Options.model_fields["data"].is_required()]


def test_the_registries_are_covered() -> None:
    """Every probe and explainer has a number option with a type and a range; choices and
    required data occur; the generated cases are not empty by accident."""
    for p in PROBES.names():
        assert {"type", "range"} <= set(_cases(PROBES.get(p).Options)), p
    for m in list_explainers():
        assert {"type", "range"} <= set(_cases(get_explainer(m).options)), m
    assert {c for _, c, _ in PROBE_CASES} == {"type", "choice", "range"}
    assert {c for _, c, _ in EXPLAINER_CASES} == {"type", "choice", "range"}
    assert {"crows_pairs", "stereoset", "bbq", "bold"} <= set(NEEDS_DATA)


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: a bad config must stop before."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr("audit.models.load_model", refuse)


def _config(tmp_path: Path, probes_: list[dict[str, Any]] | None = None,
            explain_: list[dict[str, Any]] | None = None) -> Path:
    cfg = {"models": [{"name": str(tmp_path / "no-such-model")}], "output": str(tmp_path / "runs"),
           "probes": probes_ or [], "explain": explain_ or [], "report": {"enabled": False}}
    path = tmp_path / "audit.yaml"
    path.write_text(json.dumps(cfg), encoding="utf-8")  # JSON is YAML
    return path


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], cfg: Path, where: str) -> None:
    """``taudit validate`` and ``taudit run`` exit 2 naming ``where``, and nothing is written."""
    for command in ("validate", "run"):
        code = cli.main([command, str(cfg)])
        _, err = capsys.readouterr()
        assert code == 2 and "invalid audit config" in err, (command, err)
        assert f"  {where}: " in err or f"  {where}.0: " in err, (command, where, err)  # .0: a list's item
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("probe,case,field", PROBE_CASES)
def test_bad_probe_option_fails_before_any_model_loads(
    probe: str, case: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    model = PROBES.get(probe).Options
    options = {**{n: "x" for n, f in model.model_fields.items() if f.is_required() and n != "data"}, field: BAD[case]}
    data = None if model.model_fields["data"].annotation is type(None) else tmp_path / "data"  # cost takes none
    spec = {"probe": probe, "options": options, **({"data": str(data)} if data else {})}
    _refused(tmp_path, capsys, _config(tmp_path, [spec]), f"probes.0.options.{field}")
    with pytest.raises(ProbeError, match=rf"probe '{probe}': {field}(\.0)?: "):  # from Python: the same model
        PROBES.get(probe)().run(None, data, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("probe", NEEDS_DATA)
def test_missing_data_fails_before_any_model_loads(
    probe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    _refused(tmp_path, capsys, _config(tmp_path, [{"probe": probe}]), "probes.0.data")
    with pytest.raises(ProbeError, match=rf"data: probe '{probe}' needs data="):
        PROBES.get(probe)().run(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("method,case,field", EXPLAINER_CASES)
def test_bad_explainer_option_fails_before_any_model_loads(
    method: str, case: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    step = {"name": "e", "method": method, "texts": ["a text"], "options": {method: {field: BAD[case]}}}
    _refused(tmp_path, capsys, _config(tmp_path, explain_=[step]), f"explain.0.options.{method}.{field}")
    with pytest.raises(OptionError, match=rf"method '{method}': {field}: "):
        explain(None, ["a text"], method, **{field: BAD[case]})  # type: ignore[arg-type]


@pytest.mark.parametrize("method", list_explainers())
def test_explain_step_without_inputs_fails_before_any_model_loads(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model_load: None
) -> None:
    _refused(tmp_path, capsys, _config(tmp_path, explain_=[{"name": "e", "method": method}]), "explain.0")


def test_every_problem_is_listed_and_options_are_recorded_as_validated(tmp_path: Path) -> None:
    from audit.config import ConfigError, load_config

    cfg = _config(tmp_path, [{"probe": "crows_pairs", "options": {"max_items": "ten"}},
                             {"probe": "bbq", "data": "b.jsonl", "options": {"mode": "sample", "colour": 1}}])
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    lines = str(info.value).splitlines()[1:]
    assert lines[0].startswith("  probes.0.data: probe 'crows_pairs' needs data= the path of")
    assert lines[1] == ("  probes.0.options.max_items: Input should be a valid integer, unable to parse string as "
                        "an integer (got 'ten')")
    assert lines[2].startswith("  probes.1.options: unknown option(s) ['colour'] for probe 'bbq'; allowed: [")
    assert lines[3] == "  probes.1.options.mode: Input should be 'loglik' or 'generate' (got 'sample')"
    good = load_config(_config(tmp_path, [{"probe": "bbq", "data": "b.jsonl",
                                           "options": {"max_items": "10", "length_normalize": True}}]))
    assert good.probes[0].options == {"max_items": 10, "length_normalize": "chars"}  # as validated, given only


def test_options_error_lists_its_problems() -> None:
    with pytest.raises(OptionsError) as info:
        PROBES.get("seat").parse_options({"layer": "top", "tests": 3})
    assert [loc for loc, _ in info.value.problems] == ["layer", "tests"]


# ---------------------------------------------------------------------------------------------
# stricter registries
# ---------------------------------------------------------------------------------------------


def test_registering_a_name_twice_raises() -> None:
    from audit.explain import register_explainer
    from audit.probe import Probe, register_probe
    from audit.registry import DuplicateNameError

    with pytest.raises(DuplicateNameError, match=r"probe 'crows_pairs' is registered twice: by .*crows_pairs.py"):
        @register_probe("crows_pairs")
        class Impostor(Probe):
            pass

    assert PROBES.get("crows_pairs").__module__ == "probes.crows_pairs"  # the built-in is kept
    with pytest.raises(DuplicateNameError, match="explainer 'ig' is registered twice"):
        @register_explainer("ig")
        def fake(handle: Any, preps: Any, opts: Any, progress: bool) -> list[dict[str, Any]]:
            return []

    assert get_explainer("ig").fn.__module__ == "audit.explain.gradient"


def test_the_same_definition_run_again_is_not_a_duplicate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A module reloaded, or run as ``python -m probes.xweat``, executes its ``@register_probe`` again."""
    import importlib
    import sys

    (tmp_path / "my_probe_plugin.py").write_text(
        "from audit.probe import Probe, register_probe\n"
        "@register_probe('my_probe')\n"
        "class Mine(Probe):\n"
        "    kinds = ('encoder',)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(PROBES, "_items", dict(PROBES._items))
    module = importlib.import_module("my_probe_plugin")
    first = PROBES.get("my_probe")
    importlib.reload(module)
    assert PROBES.get("my_probe") is module.Mine is not first
    sys.modules.pop("my_probe_plugin", None)


def test_explainers_load_from_their_entry_point_group(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    from importlib.metadata import EntryPoint

    from audit.explain import base

    plugin = tmp_path / "my_explainer_plugin.py"
    plugin.write_text(
        "from audit.explain.base import register_explainer\n"
        "@register_explainer('plugin_method', description='from a third-party package')\n"
        "def plugin_method(handle, preps, opts, progress):\n"
        "    return [{'scores': [[0.0] * p.length]} for p in preps]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = "transformer_audit.explainers"
    eps = [EntryPoint("mine", "my_explainer_plugin", group)]
    monkeypatch.setattr("audit.registry.entry_points", lambda group: eps if group == base._EXPLAINERS._group else [])
    monkeypatch.setattr(base._EXPLAINERS, "_plugins_loaded", False)
    monkeypatch.setattr(base._EXPLAINERS, "_items", dict(base._EXPLAINERS._items))
    assert "plugin_method" in list_explainers()
    assert get_explainer("plugin_method").description == "from a third-party package"
    sys.modules.pop("my_explainer_plugin", None)
