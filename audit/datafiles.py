"""Reading the data files probes load: every error names the file, the line or key, and the fix.

The loaders of every probe read their official formats through these helpers, so a user who
hands the audit a broken file sees one :class:`~audit.probe.ProbeError` naming the file, the
1-based line (CSV, JSON Lines) or the JSON key path, what is wrong and what to change — never
a ``UnicodeDecodeError`` or a pandas ``ParserError`` from deep inside a library.

Accepted as written by common tools: a UTF-8 byte-order mark (Excel's "CSV UTF-8" writes one),
Windows CRLF line endings, blank lines, fields of any size. Refused with a clear error: bytes that
are not UTF-8 (UTF-16 files are recognised and named as such), an empty file, a JSON object that
repeats a key (``json`` would keep the last value silently and drop the first), JSON nested deeper
than the parser can follow, a CSV with a repeated column name, a record with more or fewer fields
than the header, an unclosed quote, a missing required column.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.errors import ProbeError, brief  # noqa: F401  (brief: re-exported for the loaders)

#: CSV fields are unbounded (the csv module's default limit is 128 KiB)
_FIELD_LIMIT = 2**31 - 1


def read_text_file(path: str | Path, *, what: str = "file", error: type[Exception] = ProbeError) -> str:
    """The UTF-8 text of ``path`` with a leading byte-order mark dropped.

    Raises ``error`` (a :class:`ProbeError` unless the caller names its own type, as the config
    loader does) when the file is missing or unreadable, or is not UTF-8 — naming the line and
    byte column of the first bad byte.
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"{p}: cannot read the {what} ({exc.strerror or exc})") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise error(f"{p}: the file is UTF-16 encoded; save it as UTF-8")
    body = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        col = exc.start - (body.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{p}: line {line}, byte {col} of the line: not UTF-8 text (byte 0x{body[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


class _Repeated(dict):  # type: ignore[type-arg]
    """A parsed JSON object that had a repeated key (``repeated``)."""

    repeated: str = ""


def _key_path(obj: Any) -> tuple[str, str] | None:
    """(key path, key) of the first object (depth first, file order) that repeated a key."""
    stack: list[tuple[Any, str]] = [(obj, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Repeated):
            return path or "(top level)", node.repeated
        if isinstance(node, dict):
            stack += [(v, f"{path}.{k}" if path else str(k)) for k, v in reversed(node.items())]
        elif isinstance(node, list):
            stack += [(v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node)))]
    return None


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` that refuses an object repeating a key and JSON nested too deeply, with a
    :class:`ProbeError` naming ``where`` and the key path. A syntax error stays a
    ``json.JSONDecodeError`` (line, column) for the caller, whose message says what the file
    should hold."""
    repeated = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        d = dict(pairs)
        if len(d) < len(pairs):
            seen: set[str] = set()
            out = _Repeated(d)
            out.repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            repeated = True
            return out
        return d

    try:
        obj = json.loads(text, object_pairs_hook=hook)
    except RecursionError:
        raise ProbeError(f"{where}: JSON nested too deeply to read") from None
    if repeated:
        found = _key_path(obj)
        assert found is not None
        path, key = found
        raise ProbeError(f"{where}: at {path}: the key {key!r} appears more than once in one object "
                         "(only the last would be read); remove or rename the repeated key")
    return obj


def read_json(path: str | Path, *, what: str = "JSON file") -> Any:
    """Parse a JSON file (see :func:`read_text_file` and :func:`parse_json`); an empty file is a
    :class:`ProbeError`."""
    p = Path(path)
    text = read_text_file(p, what=what)
    if not text.strip():
        raise ProbeError(f"{p}: the file is empty; expected a {what}")
    return parse_json(text, str(p))


def files_in(path: str | Path, pattern: str, what: str, *, folder: str = "", recursive: bool = False) -> list[Path]:
    """``path`` itself if it is a file, else the files in the folder ``path`` that match
    ``pattern`` (``recursive``: in its subfolders too), sorted. A :class:`ProbeError` when
    ``path`` does not exist (``"{what} not found: …"``) or the folder holds no match
    (``"{folder} … has no {pattern} files"``; ``folder`` defaults to ``"{what} folder"``)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in (p.rglob(pattern) if recursive else p.glob(pattern)) if q.is_file())
        if not files:
            raise ProbeError(f"{folder or what + ' folder'} {p} has no {pattern} files")
        return files
    if not p.is_file():
        raise ProbeError(f"{what} not found: {p}")
    return [p]


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) splitting on ``\\n`` only (CRLF accepted), so that characters
    such as U+2028 that ``str.splitlines`` also breaks on stay inside their line."""
    for i, line in enumerate(text.split("\n"), 1):
        yield i, line.removesuffix("\r")


@contextmanager
def _unbounded_fields() -> Iterator[None]:
    old = csv.field_size_limit(_FIELD_LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(old)


def read_table_csv(
    path: str | Path, required: Sequence[str] = (), *, what: str = "CSV file", sep: str | None = None
) -> pd.DataFrame:
    """Read a CSV (tab-separated for a ``.tsv`` file) into a frame of strings, one row per record.

    The index (named ``line``) is the 1-based line where each record starts, so messages point
    at the right line even when a quoted field spans lines or blank lines were skipped. A header
    cell left empty is named ``Unnamed: <i>`` as pandas does (CrowS-Pairs' index column). Errors
    (:class:`ProbeError`, naming the file and line): not UTF-8, empty file, no rows under the
    header, a repeated column name, a record whose field count differs from the header's, an
    unclosed quote, a required column missing.
    """
    p = Path(path)
    text = read_text_file(p, what=what)
    delim = sep or ("\t" if p.suffix.lower() == ".tsv" else ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    prev = 0  # the line the previous record ended on
    with _unbounded_fields():
        try:
            for rec in reader:
                start, prev = prev + 1, reader.line_num
                if not any(f.strip() for f in rec):
                    continue  # a blank line
                if header is None:
                    header = [f.strip() or f"Unnamed: {i}" for i, f in enumerate(rec)]
                    dup = sorted({c for c in header if header.count(c) > 1})
                    if dup:
                        raise ProbeError(f"{p}: line {start}: the header repeats the column name(s) {dup}; "
                                         "give each column a distinct name")
                    continue
                if len(rec) != len(header):
                    raise ProbeError(
                        f"{p}: line {start}: {len(rec)} field(s), but the header has {len(header)}; quote a field "
                        "that contains the separator, and give every row one value per column"
                    )
                rows.append(rec)
                lines.append(start)
        except csv.Error as exc:
            raise ProbeError(f"{p}: line {prev + 1}: malformed CSV ({exc}); a field that contains the "
                             "separator, a quote or a line break must be quoted, with quotes doubled") from None
    if header is None:
        raise ProbeError(f"{p}: the file is empty; expected a {what} with a header row")
    missing = [c for c in required if c not in header]
    if missing:
        raise ProbeError(f"{p}: missing required column(s) {missing}; found {header}")
    if not rows:
        raise ProbeError(f"{p}: no rows under the header")
    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=str)


def read_table(
    path: str | Path,
    *,
    what: str = "data file",
    options: Mapping[str, str | None] | None = None,
    extra_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """A CSV/TSV (:func:`read_table_csv`, index = line numbers) or Parquet file (raw dtypes,
    index = 0-based rows named ``row``), with the columns the probe's options name checked.

    ``options`` maps an option name to the column it names (``None``: not used); a missing one is
    an error that says which option to set. ``extra_columns`` are breakdown columns.
    """
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"{what} not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        df = read_table_csv(p, what=what)
    elif suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except (OSError, ValueError) as exc:
            raise ProbeError(f"{p}: not a readable Parquet file ({exc})") from None
        df.index = pd.RangeIndex(len(df), name="row")
    else:
        raise ProbeError(f"{p}: unsupported file type {suffix!r}; use .csv, .tsv or .parquet")
    for role, col in (options or {}).items():
        if col is not None and col not in df.columns:
            raise ProbeError(f"{p}: missing the {role} {col!r}; found columns {list(df.columns)} "
                             f"(set the option {role} to the right name)")
    for col in extra_columns:
        if col not in df.columns:
            raise ProbeError(f"{p}: missing the breakdown column {col!r}; found columns {list(df.columns)}")
    if len(df) == 0:
        raise ProbeError(f"{p}: no rows")
    return df


def label_strings(col: pd.Series) -> pd.Series:
    """Cells as labels: stripped strings, a missing value (None, NaN) empty, an integral float (a
    Parquet column with NaN) without its '.0'."""
    def conv(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v).strip()

    return col.map(conv)


def read_grouped_texts(path: str | Path, *, what: str, text_column: str, attribute_column: str,
                       columns: Mapping[str, str | None] | None = None, extra_columns: Sequence[str] = (),
                       needs: str = "a probe") -> tuple[pd.DataFrame, int]:
    """A table of texts with a protected attribute (:func:`read_table`; ``classifier_fairness``,
    ``representation``) and how many rows were left out for an empty attribute. Columns: ``row``
    (the line for CSV/TSV, the 0-based row for Parquet), ``text``, one for each of ``columns``
    (option → column, named after the option less ``_column``: ``{"label_column": "y"}`` gives
    ``label``), the attribute, the ``extra_columns``; all but the text as :func:`label_strings`.
    Errors name the file, row and column: an empty or non-text text, an empty cell of one of
    ``columns``, fewer than two attribute values (``needs`` says what needs two)."""
    p = Path(path)
    columns = {k: v for k, v in (columns or {}).items() if v is not None}
    df = read_table(p, what=what, extra_columns=extra_columns,
                    options={"text_column": text_column, "attribute_column": attribute_column, **columns})
    where = str(df.index.name)
    rows = df.index.to_numpy()
    df = df.reset_index(drop=True)
    for i, t in enumerate(df[text_column]):
        if not isinstance(t, str) or not t.strip():
            raise ProbeError(f"{p}: {where} {rows[i]}: empty or non-text {text_column!r} ({t!r:.80})")
    out = pd.DataFrame({"row": rows, "text": df[text_column]})
    for option, col in columns.items():
        values = label_strings(df[col])
        empty = np.flatnonzero((values == "").to_numpy())
        if len(empty):
            raise ProbeError(f"{p}: {where} {rows[int(empty[0])]}: empty {col!r}")
        out[option.removesuffix("_column")] = values
    out[attribute_column] = label_strings(df[attribute_column])
    for col in extra_columns:
        if col not in out.columns:
            out[col] = label_strings(df[col])
    return grouped_rows(out, p, attribute_column, needs)


def grouped_rows(out: pd.DataFrame, path: Path, attribute_column: str, needs: str) -> tuple[pd.DataFrame, int]:
    """``out`` less its rows with an empty ``attribute_column``, and how many those were; fewer
    than two groups left is an error (:func:`require_groups`)."""
    keep = (out[attribute_column] != "").to_numpy()
    out = out[keep].reset_index(drop=True)
    require_groups(out[attribute_column], path, attribute_column, needs)
    return out, int((~keep).sum())


def require_groups(values: pd.Series, path: str | Path, column: str, needs: str, when: str = "") -> None:
    """The one error for an attribute with fewer than two groups, naming the file and the column
    (``needs``: what needs two groups; ``when``: e.g. " after the exclusions")."""
    groups = sorted(values.unique())
    if len(groups) < 2:
        raise ProbeError(f"{path}: the attribute column {column!r} has only one value, so only one group "
                         f"({groups[0] if groups else 'none'!r}){when}; {needs} needs at least two")


def count_rows(path: Path) -> int | None:
    """Rows of a data file by its format: CSV/TSV records after the header (quoted newlines kept
    inside their record, blank lines not counted), JSON Lines non-blank lines (a ``.jsonl`` that
    holds one JSON document, as SEAT's do, counts as JSON), a JSON list's length, Parquet rows,
    non-blank lines of a ``.txt``. ``None`` for a format without rows (a JSON object, other
    suffixes) or a file that cannot be read or parsed — the probe's own loader reports those."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        if suffix in (".csv", ".tsv"):
            records = [r for r in csv.reader(text.splitlines(keepends=True), delimiter="\t" if suffix == ".tsv" else ",")
                       if any(c.strip() for c in r)]
            return max(len(records) - 1, 0)
        lines = sum(1 for line in text.splitlines() if line.strip())
        if suffix in (".jsonl", ".ndjson", ".json"):
            try:
                doc = json.loads(text)
            except ValueError:  # several JSON Lines records (or broken JSON)
                return None if suffix == ".json" else lines
            if isinstance(doc, list):
                return len(doc)
            return 1 if suffix != ".json" and lines == 1 else None  # a one-record JSON Lines file
        if suffix == ".txt":
            return lines
    except (OSError, ValueError, csv.Error):
        return None
    return None
