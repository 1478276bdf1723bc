"""Bad input for the audit config and the policy (issue 9, part 1): each file either loads or
fails with a :class:`ConfigError` / :class:`PolicyError` naming the file, the field (or line and
column for YAML syntax) and the problem. The table in ``tests/README.md`` lists what users see.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.config import ConfigError, load_config
from audit.policy import PolicyError, load_policy

FEW = settings(max_examples=60, deadline=None)

CONFIG = """seed: 0
output: runs
models:
  - name: tiny
    kind: masked-lm
probes:
  - probe: crows_pairs
    data: pairs.csv
    options: {max_items: 5}
  - seat
policy:
  - crows_pairs.metric within 45..55
"""
POLICY = """name: gate
checks:
  - check: crows_pairs.metric within 45..55
    severity: warn
    on: ci
  - seat.mean_abs_effect_size <= 0.2
"""


def _file(folder: Path, name: str, content: str | bytes) -> Path:
    p = folder / name
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return p


def _raises(load: Callable[[Path], Any], error: type[Exception], p: Path) -> str:
    """The message of the error ``load(p)`` raises; it must name the file."""
    with pytest.raises(error) as exc:
        load(p)
    msg = str(exc.value)
    assert str(p) in msg, msg
    return msg


def _loads_or_names_file(load: Callable[[Path], Any], error: type[Exception], name: str, content: str) -> None:
    """For hypothesis: ``load`` returns, or raises ``error`` naming the file; nothing else."""
    with tempfile.TemporaryDirectory() as d:
        p = _file(Path(d), name, content)
        try:
            load(p)
        except error as exc:
            assert p.name in str(exc)


def _config(tmp_path: Path, content: str | bytes) -> Path:
    return _file(tmp_path, "audit.yaml", content)


def _config_error(tmp_path: Path, content: str | bytes) -> str:
    return _raises(load_config, ConfigError, _config(tmp_path, content))


def _policy(tmp_path: Path, content: str | bytes) -> Path:
    return _file(tmp_path, "policy.yaml", content)


def _policy_error(tmp_path: Path, content: str | bytes) -> str:
    return _raises(load_policy, PolicyError, _policy(tmp_path, content))


def _policy_data(p: Any) -> list[tuple[str, str, str]]:
    return [(c.check, c.severity, c.on) for c in p.checks]


# ---------------------------------------------------------------------------------- config


def test_config_encodings_line_endings_and_blank_lines(tmp_path: Path) -> None:
    plain = load_config(_config(tmp_path, CONFIG)).as_dict()
    assert plain["models"][0]["name"] == "tiny" and plain["probes"][1]["probe"] == "seat"
    for variant in ("\ufeff" + CONFIG, CONFIG.replace("\n", "\r\n"), "\n\n" + CONFIG.replace("\n", "\n\n"),
                    "\ufeff" + CONFIG.replace("\n", "\r\n\r\n")):
        assert load_config(_config(tmp_path, variant)).as_dict() == plain
    lines = CONFIG.encode("utf-8").split(b"\n")
    lines[3] = lines[3].replace(b"tiny", b"t\xe9ny")  # Latin-1 é on line 4
    msg = _config_error(tmp_path, b"\n".join(lines))
    assert "line 4, byte 12 of the line: not UTF-8 text (byte 0xe9); save the file as UTF-8" in msg
    assert "UTF-16" in _config_error(tmp_path, CONFIG.encode("utf-16"))


@pytest.mark.parametrize("content", ["", "\n  \n", "# only a comment\n"])
def test_empty_config(tmp_path: Path, content: str) -> None:
    msg = _config_error(tmp_path, content)
    assert "the file is empty; expected a YAML audit config" in msg or "the top level must be a mapping, got NoneType" in msg


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("models:\n  - name: tiny\n    kind: masked-lm\n", ""), r"models: Field required"),
        (lambda t: t.replace("seed: 0", "seed: zero"), r"seed: Input should be a valid integer"),
        (lambda t: t.replace("kind: masked-lm", "kind: rnn"), r"models\.0\.kind: Input should be 'masked-lm'"),
        (lambda t: t.replace("{max_items: 5}", "[5]"), r"probes\.0\.options: Input should be a valid dictionary"),
        (lambda t: t.replace("options: {max_items: 5}", "chunk_size: 0"), r"probes\.0\.chunk_size: Input should be greater"),
        (lambda t: t.replace("options: {max_items: 5}", "options: {bogus: 1}"),
         r"probes\.0\.options: unknown option\(s\) \['bogus'\] for probe 'crows_pairs'; allowed: \["),
        (lambda t: t.replace("  - seat\n", "  - sneat\n"), r"probes\.1\.probe: unknown probe 'sneat'"),
        (lambda t: t + "surprise: 1\n", r"surprise: Extra inputs are not permitted"),
        (lambda t: "- a\n- b\n", r"the top level must be a mapping, got list"),
    ],
)
def test_config_errors_name_file_field_and_problem(tmp_path: Path, edit: Any, message: str) -> None:
    assert re.search(message, _config_error(tmp_path, edit(CONFIG)))


def test_config_yaml_syntax_names_the_file_line_and_column(tmp_path: Path) -> None:
    msg = _config_error(tmp_path, CONFIG.replace("  - seat", "\t- seat"))
    assert "is not valid YAML" in msg and 'in "audit.yaml", line 10, column 1' in msg
    msg = _config_error(tmp_path, "models: [tiny\n")
    assert "is not valid YAML" in msg and "audit.yaml" in msg


def test_config_duplicated_keys_and_names(tmp_path: Path) -> None:
    msg = _config_error(tmp_path, CONFIG + "seed: 1\n")
    assert "the key 'seed' appears more than once in one mapping (only the last would be read)" in msg
    assert 'line 13, column 1' in msg
    msg = _config_error(tmp_path, CONFIG.replace("  - seat\n", "  - crows_pairs\n"))
    assert "probe instance name 'crows_pairs' is used twice; give one a distinct 'name'" in msg
    msg = _config_error(tmp_path, CONFIG.replace("    kind: masked-lm\n", "    kind: masked-lm\n  - name: x/tiny\n"))
    assert "two models share a run-directory name; give them distinct 'label's" in msg
    # a YAML merge key ("<<") overrides what it merges on purpose: no repeat
    cfg = load_config(_config(tmp_path, "models:\n  - &m {name: tiny, label: a}\n  - <<: *m\n    label: b\n"))
    assert [(m.name, m.slug) for m in cfg.models] == [("tiny", "a"), ("tiny", "b")]


def test_config_huge_fields(tmp_path: Path) -> None:
    huge = "m" * 1_000_000
    cfg = load_config(_config(tmp_path, CONFIG.replace("name: tiny", f"name: {huge}")))
    assert cfg.models[0].name == huge  # a 1 MB free-text field loads
    msg = _config_error(tmp_path, CONFIG.replace("kind: masked-lm", f"kind: {huge}"))
    assert "models.0.kind" in msg and len(msg) < 2_000  # a 1 MB invalid value is not echoed whole


def test_config_nested_too_deeply(tmp_path: Path) -> None:
    msg = _config_error(tmp_path, "models: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert "nested too deeply" in msg or "is not valid YAML" in msg


CONFIG_KEYS = ["seed", "output", "models", "probes", "explain", "policy", "report", "distributed", "name", "kind",
               "probe", "data", "options", "chunk_size", "label", "formats"]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["crows_pairs", "seat", "tiny", "masked-lm", "html", "a.b <= 1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(CONFIG_KEYS), inner, max_size=4),
    max_leaves=10,
)


@FEW
@given(st.text(max_size=200))
def test_any_text_as_config_loads_or_raises_config_error(text: str) -> None:
    _loads_or_names_file(load_config, ConfigError, "audit.yaml", text)


@FEW
@given(st.dictionaries(st.sampled_from(CONFIG_KEYS), YAML_VALUES, max_size=5),
       st.lists(st.sampled_from(["tiny", "x", {"name": "tiny"}]), min_size=1, max_size=2))
def test_any_values_in_config_fields_load_or_raise_config_error(data: dict[str, Any], models: list[Any]) -> None:
    """Wrong types anywhere: arbitrary YAML values under the config's own keys."""
    _loads_or_names_file(load_config, ConfigError, "audit.yaml", yaml.safe_dump({"models": models, **data}))


EXPLAIN_KEYS = ["name", "methods", "method", "texts", "models", "target", "steps"]
EXPLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 64) | st.text(max_size=8)
    | st.sampled_from(["ig", "rollout", "attention", "tiny", "x", "The nurse said."]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(EXPLAIN_KEYS), inner, max_size=3),
    max_leaves=8,
)


@FEW
@given(st.lists(st.dictionaries(st.sampled_from(EXPLAIN_KEYS), EXPLAIN_VALUES, max_size=5), min_size=1, max_size=2))
def test_any_explain_entries_load_or_raise_config_error(explain: list[dict[str, Any]]) -> None:
    _loads_or_names_file(load_config, ConfigError, "audit.yaml", yaml.safe_dump({"models": ["tiny", "x"], "explain": explain}))


def test_explain_models_must_be_a_list_of_names(tmp_path: Path) -> None:
    base = "models: [tiny]\nexplain:\n  - {name: why, methods: [ig], texts: [a], models: %s}\n"
    assert "explain.0.models: must be a list of model names, got 'tiny'" in _config_error(tmp_path, base % "tiny")
    assert "explain.0.models: must be a list of model names, got [[1]]" in _config_error(tmp_path, base % "[[1]]")
    assert "explain.0.models: ['other'] not in 'models'" in _config_error(tmp_path, base % "[other]")
    assert load_config(_config(tmp_path, base % "[tiny]")).explain[0]["models"] == ["tiny"]


def test_explain_on_a_sentence_encoder_needs_pairs(tmp_path: Path) -> None:
    """Issue 21: the README's explain step passed `taudit validate` and failed in `taudit run` on
    MiniLM (a demo alias known to be an encoder) or any model declared `kind: encoder`."""
    base = "models: [smollm2-135m, {name: ./enc, kind: encoder}, minilm-l6]\nexplain:\n  - {name: why, methods: [ig], %s}\n"
    err = _config_error(tmp_path, base % "texts: [a, [b, c]]")
    assert "explain.0.texts: texts [0] have no second text, but the target of sentence encoder(s) ['./enc', 'minilm-l6']" in err
    assert "target: {pair: ...}" in err
    err = _config_error(tmp_path, base % "texts: [a], models: [smollm2-135m, minilm-l6]")
    assert "sentence encoder(s) ['minilm-l6']" in err
    for ok in ("texts: [[a, b]]", "texts: [a], target: {pair: b}", "texts: [a], models: [smollm2-135m]"):
        assert load_config(_config(tmp_path, base % ok)).explain[0]["texts"], ok


# ---------------------------------------------------------------------------------- policy


def test_policy_encodings_line_endings_and_blank_lines(tmp_path: Path) -> None:
    plain = _policy_data(load_policy(_policy(tmp_path, POLICY)))
    assert plain == [("crows_pairs.metric within 45..55", "warn", "ci"), ("seat.mean_abs_effect_size <= 0.2", "fail", "value")]
    for variant in ("\ufeff" + POLICY, POLICY.replace("\n", "\r\n"), POLICY.replace("\n", "\n\n")):
        assert _policy_data(load_policy(_policy(tmp_path, variant))) == plain
    msg = _policy_error(tmp_path, POLICY.encode("utf-8").replace(b"gate", b"g\xe4te"))
    assert "line 1, byte 8 of the line: not UTF-8 text (byte 0xe4)" in msg
    assert "UTF-16" in _policy_error(tmp_path, POLICY.encode("utf-16"))
    assert "the file is empty; expected a YAML policy file" in _policy_error(tmp_path, "\n\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: gate\n", r"field 'checks' must be a non-empty list of checks"),
        ("checks: seat.x <= 1\n", r"field 'checks' must be a non-empty list of checks"),
        ("- 5\n", r"check 1 \(5\): field 'check': Input should be a valid dictionary or instance of Check"),
        ("- {check: [1]}\n", r"check 1 \(\[1\]\): field 'check': Input should be a valid string"),
        ("- {check: seat.x <= 1, severity: 3}\n", r"check 1 .*field 'severity': Input should be 'fail' or 'warn' \(got 3\)"),
        ("- seat.x <= 1\n- seat.x is small\n", r"check 2 \('seat.x is small'\): field 'check': cannot parse 'seat.x is small'"),
        ("- seat.x within 9..1\n", r"empty range: LOW 9 is greater than HIGH 1"),
        ("- {check: seat.x <= 1, when: always}\n", r"field 'when': Extra inputs are not permitted"),
        ("checks: [seat.x <= 1]\nowner: me\n", r"unknown field\(s\) owner"),
        ("checks:\n  - seat.x <= 1\nchecks:\n  - seat.y <= 1\n",
         r"is not valid YAML: the key 'checks' appears more than once in one mapping.*line 3, column 1"),
        ("- {check: seat.x <= 1, severity: warn, severity: fail}\n", r"the key 'severity' appears more than once"),
        ("checks: [seat.x <= 1\n", r"policy\.yaml is not valid YAML"),
    ],
)
def test_policy_errors_name_file_check_and_field(tmp_path: Path, content: str, message: str) -> None:
    assert re.search(message, _policy_error(tmp_path, content), re.S)


def test_policy_huge_fields_and_repeated_checks(tmp_path: Path) -> None:
    huge = "d" * 1_000_000
    p = load_policy(_policy(tmp_path, f"- {{check: seat.x <= 1, description: {huge}}}\n"))
    assert p.checks[0].description == huge  # a 1 MB description loads
    msg = _policy_error(tmp_path, f"- seat.x {huge}\n")
    assert "cannot parse 'seat.x ddd" in msg and "characters)" in msg and len(msg) < 2_000
    # the same check twice is allowed: both are judged, neither changes the other's outcome
    assert len(load_policy(_policy(tmp_path, "- seat.x <= 1\n- seat.x <= 1\n")).checks) == 2


@FEW
@given(st.text(max_size=200))
def test_any_text_as_policy_loads_or_raises_policy_error(text: str) -> None:
    _loads_or_names_file(load_policy, PolicyError, "policy.yaml", text)


POLICY_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["seat.x <= 1", "a.b within 1..2", "warn", "ci", "value"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["check", "severity", "on", "description", "checks", "name"]), inner, max_size=4),
    max_leaves=10,
)


@FEW
@given(POLICY_VALUES)
def test_any_values_in_policy_fields_load_or_raise_policy_error(data: Any) -> None:
    _loads_or_names_file(load_policy, PolicyError, "policy.yaml", yaml.safe_dump(data))


def test_unnamed_explain_steps_get_distinct_names_and_a_clash_is_refused(tmp_path: Path) -> None:
    """Unnamed explain steps are ``explain<i>`` (the runner's folder names): two of them are fine, a
    named step that takes an unnamed one's folder name is refused."""
    from audit.config import parse_config

    base = {"models": [{"name": "smollm2-135m"}], "probes": []}
    two = [{"methods": ["rollout"], "texts": ["a b"]}, {"methods": ["rollout"], "texts": ["c d"]}]
    assert len(parse_config({**base, "explain": two}).explain) == 2
    clash = [*two, {"name": "explain0", "methods": ["rollout"], "texts": ["e"]}]
    with pytest.raises(ConfigError, match=r"explain\.2\.name: 'explain0' is used twice"):
        parse_config({**base, "explain": clash})
