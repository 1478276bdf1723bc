"""Conformance tests generated from the probe registry (issue 14, item 7): every registered
probe goes through the same contract.

* **Chunked resume.** Every :class:`~audit.probe.ItemProbe` runs on a tiny model with a small
  chunk size into a checkpoint folder; its scoring fails once the first chunk is on disk (a crash
  mid-probe). Run again on the same folder, it reuses that chunk without scoring its items again,
  and its result — metrics and items — equals an uninterrupted run's.
* **Hostile strings inert.** Every probe that reads data reads a file whose texts, labels and
  groups carry script tags, event handlers, template syntax and Markdown/HTML injections; the run
  goes through ``taudit run`` into the HTML report, the Markdown model card and the dashboard's
  Runs and Bias pages, where the strings are only ever text. In Markdown that means: rendered by
  CommonMark with raw HTML allowed (the worst case), the card holds no raw HTML, link or image,
  and every payload a page shows reads as the literal text it was.

Options validated before any model loads — for probes and explainers — are tested in
``tests/test_contracts.py``; bad data files in ``tests/test_contracts_data.py``.

A probe registered later fails :func:`test_every_probe_has_a_conformance_case` until it gets a
data file here (:data:`CASES`), so no probe is left out silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import probes  # noqa: F401  (registers the built-in probes)
from audit.probe import PROBES, ItemProbe
from audit.results import ProbeResult
from audit.rundir_view import RunView
from tests.test_security import _app, _go, _md, audit_html, markdown_problems, page_problems

#: the payloads: script, event handler, template syntax (Jinja/Angular), Markdown link and image
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
TEMPLATE = "{{7*7}}"
MD = "[x](javascript:alert(1)) ![i](http://example.com/i.png)"
HOSTILE = (SCRIPT, IMG, TEMPLATE, MD)


def hostile(text: str, i: int = 0) -> str:
    """``text`` with payload ``i`` (mod 4) appended: every text differs, every payload occurs."""
    return f"{text} {HOSTILE[i % len(HOSTILE)]}"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[Any]) -> Path:
    return _write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------------------------
# one hostile data file per probe
# --------------------------------------------------------------------------------------------


def bbq_data(d: Path) -> Path:
    from tests.test_bbq import SPEC, _row

    rows = []
    for i, s in enumerate(SPEC):
        r = _row(i, *s)
        r["context"] = hostile(r["context"], i)
        rows.append(r)
    return _jsonl(d / "bbq.jsonl", rows)


def bold_data(d: Path) -> Path:
    gender = {"American_actors": {"Tom A": [hostile(f"Tom A is an actor who {w}", i) for i, w in enumerate("abc")]},
              "American_actresses": {"Ann C": [hostile(f"Ann C is an actress who {w}", i) for i, w in enumerate("abc")]}}
    _write(d / "bold" / "gender_prompt.json", json.dumps(gender))
    return d / "bold"


def crows_data(d: Path) -> Path:
    from tests.test_crows_pairs import PAIRS

    rows = [(hostile(a, i), hostile(b, i), direction, hostile(bias, i + 1))
            for i, (a, b, direction, bias) in enumerate(PAIRS * 2)]
    path = d / "crows.csv"
    pd.DataFrame(rows, columns=["sent_more", "sent_less", "stereo_antistereo", "bias_type"]).to_csv(path)
    return path


def stereoset_data(d: Path) -> Path:
    from tests.test_stereoset import INTER, INTRA, cluster, write_dataset

    intra = [cluster(c["id"], hostile(c["target"], i), c["bias_type"], c["context"],
                     tuple(s["sentence"] for s in c["sentences"])) for i, c in enumerate(INTRA)]
    inter = [cluster(c["id"], c["target"], c["bias_type"], hostile(c["context"], i),
                     tuple(hostile(s["sentence"], i + j) for j, s in enumerate(c["sentences"])))
             for i, c in enumerate(INTER)]
    return write_dataset(d / "stereoset.json", intra, inter)


def seegull_data(d: Path) -> Path:
    from tests.test_seegull import HEADER, ROWS

    body = "".join(f'"{hostile(i, k).replace(chr(34), chr(34) * 2)}",{a},{n},{s},{u},{o},x,y\n'
                   for k, (i, a, n, s, u, o) in enumerate(ROWS))
    _write(d / "seegull" / "stereotypes_tr_TR.csv", HEADER + body)
    return d / "seegull"


def templates_data(d: Path) -> Path:
    from tests.test_templates import write_set

    write_set(d / "sets", attributes={"male": ["engineer", hostile("pilot", 0)], "female": ["nurse", hostile("cook", 1)]},
              templates=["[TARGET] is [A/AN] [ATTRIBUTE].", hostile("[TARGET] works as [A/AN] [ATTRIBUTE].", 2)])
    return d / "sets"


def ethnic_data(d: Path) -> Path:
    _write(d / "ethnic" / "templates_tr.txt", "[TTT] 'den gelen kişiler [AAA] dır.\n" + hostile("[TTT] 'den [AAA].", 0) + "\n")
    _write(d / "ethnic" / "occ_tr.txt", f"Doktor\n{hostile('İşçi', 2)}\n")
    _write(d / "ethnic" / "nat.csv", f"name_tr\nIrak\nÇin\n{hostile('Fas', 3)}\n")
    return d / "ethnic"


def counterfactual_data(d: Path) -> Path:
    texts = ["He told his sister about the new job.", "The woman bought a car.", "Her uncle works at the bank.",
             "She met the man at noon.", "His mother is a doctor.", "The boy saw his father."]
    return _csv(d / "texts.csv", [{"id": hostile(f"t{i}", i), "language": "en", "text": hostile(t, i)}
                                  for i, t in enumerate(texts)])


def grouped_data(d: Path) -> Path:
    """A text table with a protected attribute (classifier_fairness, representation)."""
    words = ["good", "bad", "nice", "awful"]
    return _csv(d / "grouped.csv", [
        {"text": hostile(f"the person was {words[i % 4]} at work number {i}", i), "label": i % 2,
         "gender": hostile("female", 0) if i % 2 else hostile("male", 1), "term": f"{'fm'[i % 2]}{i % 3}",
         "lang": "en"} for i in range(24)])


def mediation_data(d: Path) -> Path:
    obj = {"name": "hostile", "language": "en", "pronouns": {"male": "he", "female": "she"},
           "gendered_words": {"male": "man", "female": "woman"},
           "professions": {"male": ["engineer", hostile("pilot", 0)], "female": ["nurse", "cook"]},
           "templates": ["the [PROFESSION] said that [PRONOUN] was tired .",
                         hostile("the [PROFESSION] ate because [PRONOUN] was hungry .", 1)]}
    _write(d / "sets" / "hostile.json", json.dumps(obj))
    return d / "sets"


def seat_data(d: Path) -> Path:
    from tests.test_seat import write_test

    d.mkdir(parents=True, exist_ok=True)
    return write_test(d / "seat.jsonl", [hostile("John", 0), "Brad", "Paul"], ["Amy", hostile("Lisa", 1), "Ann"],
                      ["career", "salary", hostile("office", 2)], ["family", "home", hostile("parents", 3)],
                      cats=(hostile("Male", 0), "Female", "Career", hostile("Family", 1)))


def xweat_data(d: Path) -> tuple[Path, dict[str, Any]]:
    from tests.test_xweat import TEST

    test = {k: {"category": hostile(v["category"], i), "examples": v["examples"]} for i, (k, v) in enumerate(TEST.items())}
    test["targ1"]["examples"] = [*test["targ1"]["examples"], hostile("Tom", 0)]
    words = [w for v in test.values() for w in v["examples"]]
    vocab = _csv(d / "vocab.csv", [{"en": w, "tr": w} for w in words])
    return _jsonl(d / "weat.jsonl", [test]), {"vocab": str(vocab)}


def privacy_data(d: Path) -> tuple[None, dict[str, Any]]:
    prompts = _jsonl(d / "prompts.jsonl", [{"id": hostile(f"p{i}", i), "lang": "en", "category": hostile("contact", i),
                                            "prompt": hostile("You can reach Dr. Smith at", i)} for i in range(6)])
    return None, {"prompts": str(prompts), "parts": ["pii"], "samples_per_prompt": 1, "max_new_tokens": 4}


@dataclass(frozen=True)
class Case:
    """How one probe is run here: the tiny model, its data file and options."""

    fixture: str
    write: Callable[[Path], Any]
    options: dict[str, Any] = field(default_factory=dict)

    def data(self, d: Path) -> tuple[Path | None, dict[str, Any]]:
        d.mkdir(parents=True, exist_ok=True)
        made = self.write(d)
        return made if isinstance(made, tuple) else (made, {})


CASES: dict[str, Case] = {
    "bbq": Case("llama", bbq_data),
    "bold": Case("llama", bold_data, {"max_new_tokens": 4, "batch_size": 2}),
    "classifier_fairness": Case("bert_classifier", grouped_data, {"n_resamples": 20, "n_permutations": 20}),
    "counterfactual": Case("bert_classifier", counterfactual_data),
    "crows_pairs": Case("bert_mlm", crows_data),
    "ethnic_bias": Case("bert_mlm", ethnic_data),
    "mediation": Case("bert_mlm", mediation_data, {"sites": ["heads", "mlp"]}),
    "privacy": Case("llama", privacy_data),
    "representation": Case("bert_encoder", grouped_data, {"folds": 2, "n_controls": 1, "n_permutations": 10}),
    "seat": Case("bert_encoder", seat_data, {"n_samples": 50, "n_bootstrap": 20}),
    "seegull": Case("llama", seegull_data),
    "stereoset": Case("bert_mlm", stereoset_data),
    "templates": Case("bert_mlm", templates_data),
    "xweat": Case("bert_encoder", xweat_data, {"n_bootstrap": 20}),
}
#: probes that read no data file (nothing hostile to give them)
NO_DATA = {"cost"}
#: probes whose items are not per text (representation: one row per layer): no payload to keep
NO_ITEM_TEXT = {"representation"}


def test_every_probe_has_a_conformance_case() -> None:
    assert set(PROBES.names()) - NO_DATA <= set(CASES), "a registered probe has no conformance case"
    assert set(CASES) | NO_DATA == set(PROBES.names()), "a case names a probe that is not registered"


# --------------------------------------------------------------------------------------------
# chunked resume
# --------------------------------------------------------------------------------------------

ITEM_PROBES = [n for n in PROBES.names() if issubclass(PROBES.get(n), ItemProbe)]
CHUNK = 4


class Crash(RuntimeError):
    """The fault injected once the first chunk is on disk."""


def _same(a: ProbeResult, b: ProbeResult) -> None:
    """The same numbers (NaN equals NaN), items, breakdown and exclusions."""
    assert json.dumps(a.summary_dict(), sort_keys=True) == json.dumps(b.summary_dict(), sort_keys=True)
    pd.testing.assert_frame_equal(a.items.reset_index(drop=True), b.items.reset_index(drop=True))
    pd.testing.assert_frame_equal(a.breakdown.reset_index(drop=True), b.breakdown.reset_index(drop=True))
    assert a.info.get("excluded") == b.info.get("excluded")


def test_resume_covers_every_item_probe() -> None:
    assert {"bbq", "bold", "crows_pairs", "stereoset", "templates", "counterfactual", "representation"} <= set(ITEM_PROBES)


@pytest.mark.parametrize("name", ITEM_PROBES)
def test_interrupted_probe_resumes_to_the_uninterrupted_result(
    name: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    handle = request.getfixturevalue(case.fixture)
    data, extra = case.data(tmp_path / "data")
    opts = {**case.options, **extra}
    cls = PROBES.get(name)
    work = tmp_path / "partial"
    first = work / "chunk-00000.parquet"
    original = cls.score_items
    scored: list[set[int]] = []

    def counted(self: ItemProbe, h: Any, items: pd.DataFrame, o: dict[str, Any], p: bool) -> pd.DataFrame:
        scored.append(set(items.index))  # positions in the loaded items: the same in every run
        return original(self, h, items, o, p)

    def crash_after_first_chunk(self: ItemProbe, h: Any, items: pd.DataFrame, o: dict[str, Any], p: bool) -> pd.DataFrame:
        if first.is_file():
            raise Crash("killed after the first chunk")
        return counted(self, h, items, o, p)

    def run(workdir: Path | None) -> ProbeResult | None:
        return cls().execute(handle, data, seed=3, progress=False, opts=opts, workdir=workdir, chunk_size=CHUNK)

    reference = run(None)
    assert reference is not None

    monkeypatch.setattr(cls, "score_items", crash_after_first_chunk)
    with pytest.raises(Exception) as crashed:
        run(work)
    assert "killed after the first chunk" in str(crashed.value), crashed.value
    assert first.is_file() and not (work / "chunk-00001.parquet").exists()
    chunk0, kept = set().union(*scored), first.stat().st_mtime_ns

    scored.clear()
    monkeypatch.setattr(cls, "score_items", counted)
    probe = cls()
    resumed = probe.execute(handle, data, seed=3, progress=False, opts=opts, workdir=work, chunk_size=CHUNK)
    assert resumed is not None
    assert probe.resumed["chunks_reused"] == 1 and probe.resumed["chunks_total"] >= 2, probe.resumed
    assert scored and not chunk0 & set().union(*scored), "items of the first chunk were scored again"
    assert first.stat().st_mtime_ns == kept
    _same(resumed, reference)


# --------------------------------------------------------------------------------------------
# hostile strings stay text, from the data file to the HTML report
# --------------------------------------------------------------------------------------------


def _stored(items: pd.DataFrame) -> list[str]:
    """The payloads a result's items hold (as data, unescaped)."""
    cells = " ".join(map(str, items.to_numpy().ravel()))
    return [h for h in HOSTILE if h in cells]


@pytest.mark.parametrize("name", [n for n in PROBES.names() if n not in NO_DATA])
def test_hostile_strings_in_data_stay_text_in_the_report(
    name: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from audit.config import load_config
    from audit.runner import run_audit
    from reports import build_reports

    case = CASES[name]
    path = request.getfixturevalue(f"{case.fixture}_path")
    data, extra = case.data(tmp_path / "data")
    spec = {"probe": name, "options": {**case.options, **extra}, **({"data": str(data)} if data else {})}
    cfg = {"models": [{"name": str(path)}], "probes": [spec], "report": {"enabled": False}, "seed": 3}
    cfg_path = _write(tmp_path / "audit.yaml", json.dumps(cfg))
    [outcome] = run_audit(load_config(cfg_path), out=tmp_path / "runs", run_id="r", progress=False)
    assert outcome.status == "complete", outcome
    rd = outcome.run_dir
    items = RunView(rd).probe(name).items()[0] if (rd.probe_dir(name) / "items.parquet").is_file() else pd.DataFrame()
    stored = _stored(items)
    written = build_reports(rd, ["html", "md", "json"], out_dir=tmp_path / "report")
    html = written["html"].read_text(encoding="utf-8")
    page = audit_html(html, allowed_tags=frozenset({"style"}))
    assert page.problems == [], page.problems[:10]
    assert "<script" not in html.lower()  # the report has no script of its own; a payload's is escaped
    shown = page.visible()
    assert [h for h in HOSTILE if h in shown], "no payload reached the report: the test would prove nothing"
    assert SCRIPT not in html and "<img src=x" not in html, "a payload reached the page unescaped"
    assert name in NO_ITEM_TEXT or stored, "the probe's items keep none of the texts it read"

    # the model card: Markdown that CommonMark renders without raw HTML, links or images
    card = written["md"].read_text(encoding="utf-8").split("\n---\n", 1)[1]  # after the front matter
    assert markdown_problems(card) == [], markdown_problems(card)[:10]
    # the card's per-category table shows the primary metric's groups: a payload among them reads as itself
    doc = json.loads(written["json"].read_text(encoding="utf-8"))
    groups = " ".join(str(r["group"]) for p in doc["probes"] for r in p["breakdown"] if r["metric"] == p["primary_metric"])
    in_card = audit_html(_md().render(card)).visible()
    assert [h for h in HOSTILE if h in groups and h not in in_card] == [], "a payload was not shown as itself"

    # the dashboard's Runs and Bias pages over the same run directory, drawn to the end
    at = _app(tmp_path / "runs", monkeypatch)
    for view in ("runs", "bias"):
        problems, seen = page_problems(_go(at, view, ["r"]))
        assert problems == [], (view, problems[:8])
        assert not [e.value for e in at.error if "could not be drawn" in e.value], (view, at.error)
    assert [h for h in HOSTILE if h in seen.replace("\\", "")], "no payload reached the Bias page"
