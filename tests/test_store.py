"""The run directory's writes: atomic, no half-written or temporary file left when the operating
system refuses a write (disk full, permission denied, read-only), and an error that names the file
and what to do; per-file row counts and the reproducibility record of the manifest."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from audit import store
from audit.datafiles import count_rows
from audit.probe import get_probe
from audit.store import RunDir, StorageError, read_json, write_json, write_parquet


def raising(code: int | None, text: str) -> Any:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, text) if code is not None else OSError(text)

    return fail


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_enospc_on_rename_keeps_the_old_file_and_removes_the_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run" / "manifest.json"
    write_json(target, {"v": 1})
    monkeypatch.setattr(store.os, "replace", raising(errno.ENOSPC, "No space left on device"))
    with pytest.raises(StorageError) as ei:
        write_json(target, {"v": 2})
    assert str(ei.value) == (f"cannot write {target}: no space left on device — free space or choose --out elsewhere")
    assert ei.value.errno == errno.ENOSPC and ei.value.path == target
    assert isinstance(ei.value, OSError) and isinstance(ei.value.__cause__, OSError)
    assert read_json(target) == {"v": 1}  # the previous version is intact, not truncated
    assert leftovers(target.parent) == []


def test_parquet_writer_failing_half_way_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow raises a bare OSError whose text carries the errno; the half-written temp file goes."""
    target = tmp_path / "probes" / "cp" / "items.parquet"
    seen: list[Path] = []

    def half_then_fail(self: pd.DataFrame, path: Any, **kw: Any) -> None:
        Path(path).write_bytes(b"PAR1 half a file")
        seen.append(Path(path))
        raise OSError("Failed to write: [Errno 28] No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_fail)
    with pytest.raises(StorageError, match=r"items\.parquet: no space left on device — free space") as ei:
        write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    assert ei.value.errno == errno.ENOSPC
    assert seen and not seen[0].exists() and not target.exists()
    assert leftovers(target.parent) == []


@pytest.mark.parametrize(("code", "what", "todo"), [
    (errno.EACCES, "permission denied", "make {folder} writable or choose --out elsewhere"),
    (errno.EROFS, "read-only file system", "choose --out on a writable file system"),
    (errno.EDQUOT, "disk quota exceeded", "free space or choose --out elsewhere"),
    (errno.EIO, "Input/output error", "check {folder} or choose --out elsewhere"),
])
def test_each_errno_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, what: str,
                                    todo: str) -> None:
    """The temp file cannot even be created (what a read-only folder does, also under root)."""
    target = tmp_path / "runs" / "r1" / "summary.json"
    monkeypatch.setattr(store.tempfile, "mkstemp", raising(code, os.strerror(code)))
    with pytest.raises(StorageError) as ei:
        write_json(target, {})
    # the folder to fix is the deepest one that exists (runs/r1 was just created by mkdir)
    assert str(ei.value) == f"cannot write {target}: {what} — {todo.format(folder=target.parent)}"
    assert not target.exists()


def test_folder_named_is_the_one_that_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mkdir of a run folder under a read-only runs root fails: the advice names the root."""
    monkeypatch.setattr(Path, "mkdir", raising(errno.EACCES, "Permission denied"))
    target = tmp_path / "runs" / "r1" / "manifest.json"
    with pytest.raises(StorageError, match=f"make {tmp_path} writable"):
        write_json(target, {})


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders; the monkeypatched variants above always run")
def test_read_only_folder_for_real(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StorageError, match=r"permission denied — make .*ro writable"):
            write_json(ro / "manifest.json", {})
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_other_errors_pass_through_and_still_clean_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an OS refusal (a bug, bad data): re-raised as it is, temp file removed all the same."""
    def bad(self: pd.DataFrame, path: Any, **kw: Any) -> None:
        Path(path).write_bytes(b"x")
        raise TypeError("cannot convert")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", bad)
    with pytest.raises(TypeError, match="cannot convert"):
        write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1]}))
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_are_swept(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "r")
    write_json(rd.manifest_path, {"status": "running"})
    part = rd.probe_dir("cp") / "partial"
    part.mkdir(parents=True)
    (part / ".chunk-00003.parquet.ab12cd.tmp").write_bytes(b"half")
    (rd.path / ".manifest.json.x1y2.tmp").write_text("{")
    (part / "chunk-00000.parquet").write_bytes(b"kept")
    removed = rd.remove_stale_temp_files()
    assert sorted(p.name for p in removed) == [".chunk-00003.parquet.ab12cd.tmp", ".manifest.json.x1y2.tmp"]
    assert [p.name for p in part.iterdir()] == ["chunk-00000.parquet"] and read_json(rd.manifest_path)
    assert RunDir(tmp_path / "absent").remove_stale_temp_files() == []


def test_count_rows_by_format(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    # BOM, Windows line endings, a quoted newline inside a record, a blank line
    csv.write_bytes('\ufeffx,y\r\n1,"two\r\nlines"\r\n\r\n3,4\r\n'.encode())
    assert count_rows(csv) == 2
    (tmp_path / "a.tsv").write_text("x\ty\n1\t2\n")
    assert count_rows(tmp_path / "a.tsv") == 1
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n{"a": 3}\n')
    assert count_rows(tmp_path / "a.jsonl") == 3
    (tmp_path / "one.jsonl").write_text('{"a": 1}\n')
    assert count_rows(tmp_path / "one.jsonl") == 1
    (tmp_path / "doc.jsonl").write_text('{\n "targ1": {"examples": ["a"]}\n}\n')  # SEAT style: one document
    assert count_rows(tmp_path / "doc.jsonl") is None
    (tmp_path / "l.json").write_text("[1, 2, 3, 4]")
    assert count_rows(tmp_path / "l.json") == 4
    (tmp_path / "o.json").write_text('{"a": [1, 2]}')
    assert count_rows(tmp_path / "o.json") is None
    (tmp_path / "broken.json").write_text("{")
    assert count_rows(tmp_path / "broken.json") is None
    pd.DataFrame({"a": range(7)}).to_parquet(tmp_path / "t.parquet")
    assert count_rows(tmp_path / "t.parquet") == 7
    (tmp_path / "w.txt").write_text("a\n\nb\n")
    assert count_rows(tmp_path / "w.txt") == 2
    assert count_rows(tmp_path / "missing.csv") is None
    assert count_rows(tmp_path / "x.bin") is None


def test_probes_count_their_own_json_formats(tmp_path: Path) -> None:
    from probes.seat import BUILTIN_DIR
    from tests.test_bold import GENDER
    from tests.test_stereoset import INTER, INTRA, write_dataset

    assert get_probe("stereoset").data_rows(write_dataset(tmp_path / "dev.json")) == len(INTRA) + len(INTER)
    (tmp_path / "gender_prompt.json").write_text(json.dumps(GENDER))
    assert get_probe("bold").data_rows(tmp_path / "gender_prompt.json") == 5
    seat_file = sorted(BUILTIN_DIR.glob("*.jsonl"))[0]
    obj = json.loads(seat_file.read_text(encoding="utf-8"))
    assert get_probe("seat").data_rows(seat_file) == sum(len(obj[k]["examples"]) for k in ("targ1", "targ2", "attr1", "attr2"))
    from probes.templates import TEMPLATE_DIR, build_items, load_template_sets

    tf = sorted(TEMPLATE_DIR.rglob("*.json"))[0]
    n = get_probe("templates").data_rows(tf)
    assert n == len(build_items(load_template_sets(tf))) and n > len(load_template_sets(tf)[0].templates)


def test_data_files_follow_the_options(tmp_path: Path) -> None:
    """A user's own swap list is part of the counterfactual probe's data identity."""
    from probes.counterfactual import DEFAULT_TEXTS
    from probes.swaps import DEFAULT_SWAPS

    cf = get_probe("counterfactual")
    assert cf.data_files(None) == [*DEFAULT_TEXTS, *DEFAULT_SWAPS]
    mine = tmp_path / "my_swaps.csv"
    mine.write_text("language,category,type,group_a,term_a,group_b,term_b\nen,gender,pronoun,m,he,f,she\n")
    assert cf.data_files(None, {"swaps": str(mine)}) == [*DEFAULT_TEXTS, mine]


def test_environment_records_what_reproduces_a_run() -> None:
    import torch

    env = store.environment()
    assert env["versions"]["torch"] and torch.__version__.startswith(env["versions"]["torch"])
    assert {"transformers", "tokenizers", "numpy", "scipy", "pandas", "transformer-audit"} <= set(env["versions"])
    assert env["torch"]["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert env["hardware"]["torch_threads"] == torch.get_num_threads() and env["hardware"]["cpu_count"]
    assert env["hardware"]["host"] and "cuda" in env["hardware"]
    assert env["env"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
    assert "PYTHONHASHSEED" in env["env"] and env["argv"]
    src = env["source"]
    if src is not None and src["commit"]:  # running from a git checkout
        assert len(src["commit"]) == 40
