"""Lines of code of the causal scoring paths: a git revision against another (or the working tree),
per top-level definition of the "causal LM" section of ``audit/scoring.py``, and per probe-side
helper that groups sequences for the scorer (:data:`PROBE_SIDE`).

A line counts as code when it holds a Python token other than a comment and is not part of a
docstring; docstring lines are counted apart; blank and comment-only lines are not counted. A
definition whose source text is the same on both sides is shared (``same``); the rest — changed,
removed or added — are the scoring paths that differ, and their totals are the comparison. ::

    python benchmarks/scoring_loc.py --before 77d75df --after HEAD
    python benchmarks/scoring_loc.py --before 77d75df            # against the working tree

Writes ``benchmarks/results/scoring_loc.json``.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import subprocess
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: probe-side code that arranges sequences for the causal scorer: CrowS-Pairs' pairs
#: (``share_prefix`` before), templates' sentence de-duplication, and the item chunks cut where
#: neighbours share a prefix (added for the prefix tree)
PROBE_SIDE = {"probes/crows_pairs.py": ["causal_pair_scores"], "probes/templates.py": ["score_items"],
              "audit/probe.py": ["chunk_bounds", "ItemProbe.chunk_bounds"]}


def source(rev: str | None, file: str) -> str:
    """``file`` at git revision ``rev``, or in the working tree for None. Since the split of
    ``audit/scoring.py`` into a package, its causal LM section is ``audit/scoring/causal.py``
    (returned between the two section headers)."""
    def read(f: str) -> str:
        if rev is None:
            return (ROOT / f).read_text(encoding="utf-8")
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{f}"], capture_output=True, text=True,
                              check=True).stdout
    try:
        return read(file)
    except (FileNotFoundError, subprocess.CalledProcessError):
        if file != "audit/scoring.py":
            raise
        return "# causal LM\n" + read("audit/scoring/causal.py") + "\n# embeddings\n"


def definitions(src: str, names: list[str] | None = None) -> dict[str, tuple[str, int, int]]:
    """Each top-level statement between the ``# causal LM`` and ``# embeddings`` headers, or each of
    ``names`` (``function`` or ``Class.method``): its name → (source text, code lines, docstring
    lines)."""
    lines = src.splitlines()
    first, last = (lines.index("# causal LM") + 1, lines.index("# embeddings") + 1) if names is None else (0, 0)
    docs: set[int] = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            docs.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    code: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    out = {}
    tree = ast.parse(src)
    nodes = [(f"{c.name}.", m) for c in tree.body if isinstance(c, ast.ClassDef) for m in c.body] if names else []
    for prefix, node in [("", n) for n in tree.body] + nodes:
        if names is None and not first < node.lineno < last or names and prefix + getattr(node, "name", "") not in names \
                or isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Expr)):  # a module's imports and docstring
            continue
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        stop = node.end_lineno or node.lineno
        span = range(start, stop + 1)
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        name = prefix + getattr(node, "name", "") or (ast.unparse(target) if target is not None else f"line {start}")
        out[name] = ("\n".join(lines[start - 1 : stop]), sum(v in code and v not in docs for v in span),
                     sum(v in docs for v in span))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="77d75df", help="git revision before (default: 77d75df)")
    ap.add_argument("--after", default=None, help="git revision after (default: the working tree)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scoring_loc.json"))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for file, names in [("audit/scoring.py", None), *PROBE_SIDE.items()]:
        before, after = (definitions(source(rev, file), names) for rev in (args.before, args.after))
        for name in [*before, *(n for n in after if n not in before)]:
            b, a = before.get(name), after.get(name)
            state = "same" if a and b and a[0] == b[0] else "changed" if a and b else "removed" if b else "added"
            rows.append({"file": file, "name": name, "state": state, "code_before": b[1] if b else 0,
                         "doc_before": b[2] if b else 0, "code_after": a[1] if a else 0, "doc_after": a[2] if a else 0})
    print("| file | definition | state | code before | code after | docstring before | docstring after |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['file']} | {r['name']} | {r['state']} | {r['code_before']} | {r['code_after']} | {r['doc_before']} | {r['doc_after']} |")
    totals = {}
    scoring_py = lambda r: r["file"] == "audit/scoring.py"  # noqa: E731
    for label, keep in [("audit/scoring.py, definitions that differ", lambda r: scoring_py(r) and r["state"] != "same"),
                        ("audit/scoring.py, whole causal LM section", scoring_py),
                        ("probe side (crows_pairs, templates, chunk_bounds)", lambda r: not scoring_py(r)),
                        ("causal LM section + probe side", lambda r: True)]:
        t = {k: sum(r[k] for r in rows if keep(r)) for k in ("code_before", "code_after", "doc_before", "doc_after")}
        totals[label] = t
        print(f"| **{label}** | | | {t['code_before']} | {t['code_after']} | {t['doc_before']} | {t['doc_after']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"before": args.before, "after": args.after or "working tree",
                                          "definitions": rows, "totals": totals}, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
