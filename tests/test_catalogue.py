"""``taudit data list`` / ``taudit data fetch`` (audit/catalogue.py) against a local HTTP server on
127.0.0.1 serving ../shared/data, pinned sha256 checks, ``data: NAME`` in configs, and the
README's example config validating, then running, as written after a fetch."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shlex
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from audit.catalogue import catalogue, resolve_data
from audit.config import load_config
from audit.probe import PROBES
from tests.conftest import shared_file
from tests.test_cli_errors import taudit, write

REPO = Path(__file__).resolve().parents[1]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _shared() -> Path:
    return shared_file("crows-pairs/crows_pairs_anonymized.csv").parents[1]  # skips without ../shared


def test_catalogue_pins_official_urls_and_hashes() -> None:
    cat = catalogue()
    assert {"crows_pairs", "stereoset", "seat", "bbq", "bold", "winobias", "mbbq", "weathub", "seegull"} <= set(cat)
    for name, e in cat.items():
        assert e["licence"] and e["source"].startswith("https://github.com/"), name
        for f in e["files"]:
            # the authors' repository at a fixed 40-hex commit, never a moving branch
            assert re.match(r"^https://raw\.githubusercontent\.com/[^/]+/[^/]+/[0-9a-f]{40}/", f["url"]), f["url"]
            assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) and f["bytes"] > 0
        assert any(f["path"] == e["data"] or f["path"].startswith(e["data"] + "/") for f in e["files"]), name


def test_fetch_from_a_local_server_verifies_and_prints_the_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serve: object,
) -> None:
    url = serve(_shared())  # type: ignore[operator]
    dest = tmp_path / "data"
    code, out, err = taudit(capsys, "data", "fetch", "crows_pairs", "seat", "--dir", str(dest), "--mirror", url)
    assert code == 0, err
    assert "crows_pairs: 1 file(s) verified (sha256)" in out and "licence: CC BY-SA 4.0" in out
    assert "seat: 50 file(s) verified" in out and "licence: CC BY-NC 4.0" in out
    got = dest / "crows-pairs" / "crows_pairs_anonymized.csv"
    assert hashlib.sha256(got.read_bytes()).hexdigest() == catalogue()["crows_pairs"]["files"][0]["sha256"]
    code, out, _ = taudit(capsys, "data", "list", "--dir", str(dest))
    assert code == 0
    rows = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert rows["crows_pairs"].endswith("fetched") and rows["bbq"].endswith("not fetched")
    assert resolve_data("crows_pairs", dest) == str(got)


def test_a_changed_file_is_refused_and_nothing_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serve: object,
) -> None:
    src = tmp_path / "mirror" / "crows-pairs"
    src.mkdir(parents=True)
    original = _shared() / "crows-pairs" / "crows_pairs_anonymized.csv"
    (src / "crows_pairs_anonymized.csv").write_bytes(original.read_bytes().replace(b"black", b"white", 1))
    url = serve(tmp_path / "mirror")  # type: ignore[operator]
    dest = tmp_path / "data"
    code, _, err = taudit(capsys, "data", "fetch", "crows_pairs", "--dir", str(dest), "--mirror", url)
    assert code == 2 and "has sha256" in err and "expected " + catalogue()["crows_pairs"]["files"][0]["sha256"] in err
    assert not [p for p in dest.rglob("*") if p.is_file()]
    code, _, err = taudit(capsys, "data", "fetch", "crowspairs", "--dir", str(dest))
    assert code == 2 and "unknown dataset 'crowspairs'" in err


def test_data_name_in_a_config(tmp_path: Path, capsys: pytest.CaptureFixture[str], serve: object,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAUDIT_DATA_DIR", str(tmp_path / "data"))
    cfg = write(tmp_path / "a.yaml", "models: [smollm2-135m]\nprobes:\n  - {probe: crows_pairs, data: crows_pairs}\n")
    code, _, err = taudit(capsys, "validate", str(cfg))
    assert code == 2 and "probes.0.data: dataset 'crows_pairs' is not fetched" in err
    assert "taudit data fetch crows_pairs" in err
    url = serve(_shared())  # type: ignore[operator]
    assert taudit(capsys, "data", "fetch", "crows_pairs", "--mirror", url)[0] == 0
    code, out, err = taudit(capsys, "validate", str(cfg))
    assert code == 0, err


def _readme_block(lang: str) -> str:
    """The first ```lang block of the README's "The audit config" section, as written."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## The audit config"):]
    start = section.index(f"```{lang}\n") + len(lang) + 4
    return section[start:section.index("\n```", start)]


def _readme_config() -> str:
    return _readme_block("yaml")


def _readme_commands() -> list[list[str]]:
    """The ``taudit`` commands of the README's bash block after the config, comments dropped and
    ``a && b`` split, each as argv without the leading ``taudit``."""
    cmds = []
    for line in _readme_block("bash").splitlines():
        for part in line.split("#", 1)[0].split("&&"):
            argv = shlex.split(part)
            if argv:
                assert argv[0] == "taudit", line
                cmds.append(argv[1:])
    return cmds


def test_readme_example_config_validates_as_written_after_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serve: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAUDIT_DATA_DIR", str(tmp_path / "data"))
    cfg = write(tmp_path / "audit.yaml", _readme_config())
    url = serve(_shared())  # type: ignore[operator]
    code, _, err = taudit(capsys, "validate", str(cfg))
    assert code == 2 and "not fetched" in err
    assert taudit(capsys, "data", "fetch", "crows_pairs", "stereoset", "--mirror", url)[0] == 0
    code, out, err = taudit(capsys, "validate", str(cfg))
    assert code == 0 and out.startswith("ok: 2 model(s), 3 probe(s), 1 explain step(s)"), err
    shutil.rmtree(tmp_path / "data")


@pytest.mark.slow
def test_readme_example_config_runs_as_written_after_fetch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], serve: object, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 21: the README's config and commands, followed step by step on the demo models, with
    the datasets fetched from the local server instead of GitHub (``$TAUDIT_DATA_MIRROR``)."""
    monkeypatch.setenv("TAUDIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TAUDIT_DATA_MIRROR", serve(_shared()))  # type: ignore[operator]
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path / "audit.yaml", _readme_config())
    commands = _readme_commands()
    fetched = {a for c in commands if c[:2] == ["data", "fetch"] for a in c[2:]}
    config = load_config(cfg)
    named = {p.data for p in config.probes if isinstance(p.data, str) and p.data in catalogue()}
    assert named and fetched == named  # the README fetches exactly the datasets its config names
    codes = {}
    for argv in commands:
        code, _, err = taudit(capsys, *argv)
        codes[argv[0]] = code
        assert code in ((0, 1) if argv[0] == "run" else (0,)), f"taudit {shlex.join(argv)}: {err}"
    assert set(codes) >= {"data", "validate", "run"}
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == len(config.models)
    scored: dict[str, set[str]] = {}
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
        kind = manifest["model"]["kind"]
        for p in config.probes:
            entry = manifest["probes"][p.instance]
            if kind not in PROBES.get(p.probe).kinds:  # e.g. CrowS-Pairs on a sentence encoder
                assert entry["status"] == "skipped" and kind in entry["reason"], (run.name, p.instance, entry)
                continue
            summary = json.loads((run / "probes" / p.instance / "summary.json").read_text(encoding="utf-8"))
            assert summary["probe"] == p.probe and summary["status"] == "complete", (run.name, p.instance)
            assert summary["metrics"] and all(m["value"] is not None for m in summary["metrics"].values())
            scored.setdefault(p.instance, set()).add(run.name)
        assert (run / "report.html").is_file() and (run / "verdict.json").is_file()
    assert set(scored) == {p.instance for p in config.probes}  # every probe of the config ran somewhere
