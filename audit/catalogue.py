"""Benchmark datasets by name: ``taudit data list`` / ``taudit data fetch NAME [--dir DIR]``.

``audit/data_catalogue.json`` pins, for each benchmark (CrowS-Pairs, StereoSet, SEAT, BBQ, BOLD,
WinoBias, MBBQ, WEATHub, SeeGULL), every file's official source URL (the authors' GitHub
repository at a fixed commit), its sha256 and size, and the licence. A fetch downloads each file,
refuses one whose sha256 differs (nothing is kept), and prints the licence. Files land under
``DIR/<layout of the catalogue>`` — default :func:`data_dir` (``$TAUDIT_DATA_DIR``, else
``~/.cache/transformer-audit/data``) — so a config can say ``data: crows_pairs`` instead of a
path (:func:`resolve_data`).

``--mirror URL`` (or ``$TAUDIT_DATA_MIRROR``) fetches the same relative paths from another server
(an institution's mirror; the tests serve ``../shared/data`` on 127.0.0.1); the pinned sha256
still decides what is accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

CHUNK = 1 << 20
TIMEOUT_S = 60


class DataError(ValueError):
    """An unknown dataset name, a download that failed, or a file whose sha256 does not match."""


def catalogue() -> dict[str, dict[str, Any]]:
    """Name → {title, licence, source, data, files: [{path, url, sha256, bytes}]}."""
    return json.loads(files("audit").joinpath("data_catalogue.json").read_text(encoding="utf-8"))


def data_dir() -> Path:
    """Where fetched datasets live: ``$TAUDIT_DATA_DIR``, else ``~/.cache/transformer-audit/data``."""
    env = os.environ.get("TAUDIT_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "transformer-audit" / "data"


def entry(name: str) -> dict[str, Any]:
    cat = catalogue()
    if name not in cat:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(cat))} (taudit data list)")
    return cat[name]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def is_fetched(name: str, root: Path | None = None) -> bool:
    """Whether every file of ``name`` is present under ``root`` with its pinned size."""
    base = root or data_dir()
    return all((base / f["path"]).is_file() and (base / f["path"]).stat().st_size == f["bytes"]
               for f in entry(name)["files"])


def fetch(name: str, root: Path | None = None, mirror: str | None = None) -> list[Path]:
    """Download every file of ``name`` into ``root`` and verify its pinned sha256.

    A file already present with the right sha256 is not downloaded again. A mismatch raises
    :class:`DataError` naming the file, both hashes and the URL, and keeps nothing of it.
    """
    e = entry(name)
    base = root or data_dir()
    mirror = mirror or os.environ.get("TAUDIT_DATA_MIRROR") or None
    out = []
    for f in e["files"]:
        dest = base / f["path"]
        if dest.is_file() and _sha256(dest) == f["sha256"]:
            out.append(dest)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = mirror.rstrip("/") + "/" + quote(f["path"]) if mirror else str(f["url"])
        if not url.startswith(("https://", "http://")):
            raise DataError(f"{name}: refusing to fetch {url!r} (only http and https URLs)")
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, tmp.open("wb") as w:  # nosec B310  # scheme checked above
                shutil.copyfileobj(r, w, CHUNK)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{name}: cannot download {f['path']} from {url}: {exc}") from None
        got = _sha256(tmp)
        if got != f["sha256"]:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{name}: {f['path']} from {url} has sha256 {got}, expected {f['sha256']}; "
                            "nothing was kept (a changed or corrupted file)")
        os.replace(tmp, dest)
        out.append(dest)
    return out


def resolve_data(value: str | None, root: Path | None = None) -> str | None:
    """A config's ``data:``: a catalogue name (``crows_pairs``) becomes the fetched file or folder;
    anything else is returned unchanged. A name that was not fetched raises :class:`DataError`
    saying which command fetches it."""
    if value is None or value not in catalogue():
        return value
    base = root or data_dir()
    if not is_fetched(value, base):
        raise DataError(f"dataset {value!r} is not fetched into {base}; run: taudit data fetch {value}"
                        + (f" --dir {base}" if root is not None else ""))
    return str(base / entry(value)["data"])
