"""MBBQ control set in the bbq probe: file pairing, control accuracy, gap, chance flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.probe import ProbeError, get_probe
from probes import bbq, bbq_control
from tests.conftest import shared_file
from tests.test_bbq import SPEC, _row, write_jsonl


def _control_row(i: int, cat: str, cond: str, pol: str, label: int) -> dict:
    r = _row(i, cat, cond, pol, label)
    names = ["Ayşe", "Zeynep"]
    info = dict(r["answer_info"])
    k = 0
    for j in range(3):
        key = f"ans{j}"
        if info[key][1] != "unknown":
            info[key] = [names[k], info[key][1]]
            r[key] = names[k]
            k += 1
    r["answer_info"] = info
    return r


@pytest.fixture
def mbbq_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mbbq"
    d.mkdir()
    write_jsonl(d / "Age_tr.jsonl", [_row(i, *s) for i, s in enumerate(SPEC)])
    write_jsonl(d / "Age_control_tr.jsonl", [_control_row(i, *s) for i, s in enumerate(SPEC)])
    return d


def test_partner_names() -> None:
    assert bbq_control.control_partner(Path("d/Age_tr.jsonl")) == Path("d/Age_control_tr.jsonl")
    assert bbq_control.control_partner(Path("d/Sexual_orientation_tr.jsonl")) == Path("d/Sexual_orientation_control_tr.jsonl")
    assert bbq_control.control_partner(Path("d/Age.jsonl")) == Path("d/Age_control.jsonl")
    assert bbq_control.is_control_file(Path("Age_control_tr.jsonl"))
    assert not bbq_control.is_control_file(Path("Age_tr.jsonl"))
    assert not bbq_control.is_control_file(Path("Age_controlled_tr.jsonl"))


def test_split_files_options(mbbq_dir: Path, tmp_path: Path) -> None:
    files = sorted(mbbq_dir.glob("*.jsonl"))
    main, ctrl = bbq_control.split_files(files, mbbq_dir, "auto")
    assert [f.name for f in main] == ["Age_tr.jsonl"] and [f.name for f in ctrl] == ["Age_control_tr.jsonl"]
    main, ctrl = bbq_control.split_files(files, mbbq_dir, False)
    assert [f.name for f in main] == ["Age_tr.jsonl"] and ctrl == []  # never scored as biased items
    assert bbq_control.split_files(files, mbbq_dir, str(mbbq_dir))[1] == ctrl + [mbbq_dir / "Age_control_tr.jsonl"]
    lone = write_jsonl(tmp_path / "Lone_tr.jsonl", [_row(0, *SPEC[0])])
    assert bbq_control.split_files([lone], lone, "auto") == ([lone], [])
    with pytest.raises(ProbeError, match="Lone_control_tr.jsonl"):
        bbq_control.split_files([lone], lone, True)
    with pytest.raises(ProbeError, match="control data not found"):
        bbq_control.split_files([lone], lone, str(tmp_path / "nope.jsonl"))
    with pytest.raises(ProbeError, match="only control files"):
        bbq_control.split_files([mbbq_dir / "Age_control_tr.jsonl"], mbbq_dir, "auto")
    with pytest.raises(ProbeError, match="control.bool: Input should be a valid boolean"):  # checked by BBQ.Options
        get_probe("bbq").parse_options({"control": 3}, mbbq_dir)


def _scored(path: Path, answers: list[int], control: bool) -> pd.DataFrame:
    return bbq.score_answers(bbq.load_bbq(path), answers).assign(control=control)


def test_control_metrics_by_hand(mbbq_dir: Path) -> None:
    # biased: 4 of 8 correct; control: 6 of 8 correct
    labels = [s[3] for s in SPEC]
    biased_answers = [lab if i % 2 == 0 else (lab + 1) % 3 for i, lab in enumerate(labels)]
    ctrl_answers = [lab if i < 6 else (lab + 1) % 3 for i, lab in enumerate(labels)]
    items = pd.concat([_scored(mbbq_dir / "Age_tr.jsonl", biased_answers, False),
                       _scored(mbbq_dir / "Age_control_tr.jsonl", ctrl_answers, True)], ignore_index=True)
    res = get_probe("bbq").summarise(items, seed=0)
    s = res.summary
    assert s["control_accuracy"].value == pytest.approx(75.0)
    assert s["control_accuracy_gap"].value == pytest.approx(75.0 - 50.0)
    assert s["control_accuracy_gap"].ci_low < 25.0 < s["control_accuracy_gap"].ci_high
    # MBBQ's ambiguous score by hand: rows 1, 2, 5, 6 answer unknown, counter-biased, unknown,
    # counter-biased → (0 − 2) / 4
    assert s["bias_score_ambig_mbbq"].value == pytest.approx(-50.0)
    assert "not interpretable" in s["bias_score_ambig_mbbq"].warning
    # every answer parsed: the same number as S_AMB (the unknown answer is the correct one)
    assert s["bias_score_ambig_mbbq"].value == pytest.approx(bbq.bias_score_ambig(
        res.items[~res.items["control"] & (res.items["n_biased_options"] == 1)]))
    # the biased-set metrics use the biased rows only
    assert s["accuracy_ambig"].n == 4 and s["accuracy_disambig"].n == 4
    b = res.breakdown
    acc = b[b["metric"] == "control_accuracy"].set_index("group")["value"]
    assert acc["Age"] == pytest.approx(100.0) and acc["Race"] == pytest.approx(50.0)
    # 8 items cannot show accuracy above chance: flagged, bias scores not interpretable
    assert res.info["control"]["categories"]["Age"]["at_chance"] is True
    assert res.info["control"]["categories"]["Age"]["bias_scores"] == "not interpretable"
    assert (b[b["metric"] == "bias_interpretable"]["value"] == 0.0).all()
    assert "not interpretable" in s["bias_score_ambig"].warning
    assert any("at chance" in w and "Age" in w for w in res.warnings)
    assert len(res.items) == 16 and int(res.items["control"].sum()) == 8


def test_chance_rule_needs_both_conditions() -> None:
    n = 60
    ctrl = pd.DataFrame({"context_condition": ["ambig"] * n + ["disambig"] * n,
                         "correct": [True] * n + [False] * n})
    assert bbq_control.at_chance(ctrl)  # "always unknown": 100 % / 0 %
    ctrl["correct"] = [True] * (2 * n)
    assert not bbq_control.at_chance(ctrl)
    # 40 % of 60 is not significantly above 1/3; 60 % is
    assert not bbq_control.above_chance(np.array([True] * 24 + [False] * 36))
    assert bbq_control.above_chance(np.array([True] * 36 + [False] * 24))


def test_gap_interval_covers_the_truth_in_simulation() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for k in range(200):
        a = pd.DataFrame({"correct": rng.random(80) < 0.7})
        b = pd.DataFrame({"correct": rng.random(80) < 0.5})
        mv = bbq_control.gap_metric(a, b, seed=k)
        hits += mv.ci_low <= 20.0 <= mv.ci_high
    assert 0.9 <= hits / 200 <= 0.99


def test_probe_pairs_control_automatically(gpt2, mbbq_dir: Path) -> None:  # type: ignore[no-untyped-def]
    res = get_probe("bbq").run(gpt2, mbbq_dir, seed=0, progress=False)
    assert {"control_accuracy", "control_accuracy_gap"} <= set(res.summary)
    ctrl = res.items[res.items["control"]]
    assert len(ctrl) == 8 and set(ctrl["file"]) == {"Age_control_tr.jsonl"}
    assert res.summary["control_accuracy"].value == pytest.approx(100.0 * ctrl["correct"].mean())
    # a run without the control set gives the same biased-set numbers
    off = get_probe("bbq").run(gpt2, mbbq_dir, seed=0, progress=False, control=False)
    assert "control_accuracy" not in off.summary
    assert off.summary["bias_score_ambig"].value == pytest.approx(res.summary["bias_score_ambig"].value)
    assert get_probe("bbq").data_files(mbbq_dir, {"control": "auto"}) == sorted(mbbq_dir.glob("*.jsonl"))


def test_real_mbbq_control_pairs() -> None:
    f = shared_file("turkish/mbbq/Sexual_orientation_tr.jsonl")
    main, ctrl = bbq_control.split_files(sorted(f.parent.glob("*.jsonl")), f.parent, "auto")
    assert len(main) == 6 and len(ctrl) == 6
    assert all(c == bbq_control.control_partner(m) for m, c in zip(main, ctrl, strict=True))
    df = bbq.load_bbq(ctrl[-1])
    assert len(df) == 152 and (df["context_condition"] == "ambig").sum() == 76


@pytest.mark.slow
def test_smollm2_on_real_mbbq_with_control() -> None:
    f = shared_file("turkish/mbbq/Sexual_orientation_tr.jsonl")
    from audit.models import load_model

    handle = load_model("smollm2-135m", device="cpu")
    res = get_probe("bbq").run(handle, f.parent, seed=0, progress=False, max_items=12)
    cats = res.info["control"]["categories"]
    assert len(cats) == 6 and all(v["control_items"] == 12 for v in cats.values())
    assert 0.0 <= res.summary["control_accuracy"].value <= 100.0
    assert res.summary["control_accuracy"].ci_low <= res.summary["control_accuracy"].value
