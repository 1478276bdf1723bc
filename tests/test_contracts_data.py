"""The data contract every registered probe keeps (issue 14), generated from the registry: an
empty file, a file of bytes in no format, and a file whose rows lack the probe's fields, given as
a probe's ``data`` on a model of a kind it supports, end in a :class:`ProbeError` that names the
file — never a ``KeyError``, an ``IndexError`` or a crash inside scoring — and nothing is scored.

A probe added later is covered without editing this file: the cases come from ``PROBES`` and
each probe's own ``Options`` model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import probes  # noqa: F401  (registers the built-in probes)
from audit.errors import ProbeError
from audit.probe import PROBES

#: one tiny model fixture (tests/conftest.py, loaded through the real loader) per model kind
FIXTURE = {"causal-lm": "llama", "masked-lm": "bert_mlm", "encoder": "bert_encoder", "classifier": "bert_classifier"}

#: probes whose options take a data file (``cost`` takes none)
WITH_DATA = [p for p in PROBES.names() if PROBES.get(p).Options.model_fields["data"].annotation is not type(None)]

#: (file name, content): each format a probe reads, empty, in no format, or without its fields
BAD_FILES = {
    "empty.csv": b"",
    "empty.jsonl": b"",
    "no-format.json": b"\x00\x01\x02 {[ not, a: dataset\n\xff\xfe\n",
    "wrong-fields.csv": b"no_such_field,other\n1,x\n2,y\n",
    "wrong-fields.jsonl": b'{"no_such_field": 1, "other": "x"}\n{"no_such_field": 2, "other": "y"}\n',
}


def test_the_data_cases_cover_the_registry() -> None:
    assert {"crows_pairs", "stereoset", "bbq", "bold", "seat", "templates", "xweat"} <= set(WITH_DATA)
    assert "cost" not in WITH_DATA and "privacy" not in WITH_DATA
    for p in WITH_DATA:
        assert any(k in FIXTURE for k in PROBES.get(p).kinds), p


def _required_files(probe: str, bad: Path) -> dict[str, Any]:
    """Every other required option of ``probe`` that names a file (xweat's ``vocab``) gets the
    same bad file, so that the data file is what the run stumbles on first or second."""
    fields = PROBES.get(probe).Options.model_fields
    return {n: str(bad) for n, f in fields.items() if f.is_required() and n != "data"}


@pytest.mark.parametrize("name", list(BAD_FILES))
@pytest.mark.parametrize("probe", WITH_DATA)
def test_bad_data_is_a_probe_error_naming_the_file(
    probe: str, name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    cls = PROBES.get(probe)
    handle = request.getfixturevalue(next(FIXTURE[k] for k in cls.kinds if k in FIXTURE))
    bad = tmp_path / f"bad-{name}"
    bad.write_bytes(BAD_FILES[name])
    with pytest.raises(ProbeError) as err:
        cls().run(handle, bad, progress=False, **_required_files(probe, bad))
    assert bad.name in str(err.value), (probe, name, str(err.value))


@pytest.mark.parametrize("probe", [p for p in PROBES.names() if p not in WITH_DATA])
def test_data_given_to_a_probe_that_takes_none_is_refused_before_any_model(probe: str, tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match=rf"probe '{probe}': data: "):
        PROBES.get(probe)().run(None, tmp_path / "x.csv", progress=False)  # type: ignore[arg-type]
