"""The shipped Turkish audit profile (taudit run --profile tr)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit.cli import main
from audit.config import ConfigError, profile_config, profiles
from tests.conftest import REPO, SHARED_DATA


def test_profile_validates_and_names_every_turkish_probe() -> None:
    assert "tr" in profiles()
    cfg = profile_config("tr")
    assert {p.probe for p in cfg.probes} == {"bbq", "ethnic_bias", "seegull", "xweat", "seat", "templates",
                                             "counterfactual"}
    assert [m.name for m in cfg.models] == ["smollm2-135m"]
    assert cfg.resolve("../shared/x") == str(Path.cwd() / "../shared/x")


def test_unknown_profile_and_both_sources(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'xx'; shipped profiles: tr"):
        profile_config("xx")
    assert main(["run", "--profile", "xx", "--out", str(tmp_path)]) == 2
    assert "unknown profile" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "a.yaml"), "--profile", "tr", "--out", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err


def test_profile_data_exists_beside_a_checkout() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not available")
    old = Path.cwd()
    os.chdir(REPO)
    try:
        cfg = profile_config("tr")
        for p in cfg.probes:
            if p.data is not None:
                assert Path(cfg.resolve(p.data)).exists(), p.data
            for key in ("vocab",):
                if key in p.options:
                    assert Path(p.options[key]).is_file()
    finally:
        os.chdir(old)
