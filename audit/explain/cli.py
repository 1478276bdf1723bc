"""``taudit explain MODEL TEXT [TEXT ...] --method ig [--target key=value ...] [--html out.html]``.

A command plug-in (entry-point group ``transformer_audit.commands``): loads the model, runs one or
more methods, prints a token table (token, score, bar) and optionally writes a self-contained
HTML heat map. Exit codes: 0 ok, 2 bad input or a model that cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def parse_pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``key=value`` items or JSON objects (values parsed as JSON when they can be: numbers, true/false)."""
    out: dict[str, Any] = {}
    for part in items or []:
        part = part.strip()
        if part.startswith("{"):
            try:
                out.update(json.loads(part))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{what} {part!r} is not valid JSON: {exc}") from None
            continue
        if "=" not in part:
            raise ValueError(f"{what} {part!r} must look like key=value")
        key, raw = part.split("=", 1)
        try:
            val: Any = json.loads(raw)
        except json.JSONDecodeError:
            val = raw
        out[key.strip()] = val
    return out


def _handler(args: argparse.Namespace) -> int:
    """Errors (bad input, a model that cannot be loaded) reach ``taudit``'s own handler: one line, exit 2."""
    from audit.explain import explain
    from audit.explain.render import html_report, token_table
    from audit.explain.step import method_options
    from audit.models import load_model

    methods = args.method or ["ig"]
    target = parse_pairs(args.target, "--target")
    per_method = method_options(methods, parse_pairs(args.option, "--option"))
    inputs: list[Any] = [(t, args.pair) for t in args.texts] if args.pair else list(args.texts)
    # the CLI never runs a model folder's own code nor unpickles weights (audit config only)
    handle = load_model(args.model, kind=args.kind, device=args.device, trust_remote_code=False, allow_pickle=False)
    results = []
    for method in methods:
        attr = explain(handle, inputs, method=method, target=target or None, progress=not args.quiet,
                       **per_method[method])
        results.append(attr)
        print(token_table(attr))
        print()
    if args.html:
        Path(args.html).write_text(html_report(results, f"{handle.name}: token attributions"), encoding="utf-8")
        print(f"wrote {args.html}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``explain`` subcommand to ``taudit``."""
    from audit.explain import list_explainers
    from audit.models import KINDS

    p = subparsers.add_parser(
        "explain", help="attribute a model's prediction on a text to its tokens",
        description="Explain MODEL's prediction on each TEXT. Targets are kind-specific key=value pairs, e.g. "
                    "--target token=she (masked LM: use [MASK] in the text), --target mode=generate "
                    "max_new_tokens=8 (causal LM), --target class=1 (classifier); sentence encoders need --pair.")
    p.add_argument("model", help="demo alias (smollm2-135m, minilm-l6), local folder or hub id")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--method", "-m", action="append", choices=list_explainers(), default=None,
                   help="attribution method (repeatable; default ig)")
    p.add_argument("--target", "-t", nargs="+", action="extend", metavar="KEY=VALUE", help="target fields")
    p.add_argument("--option", "-o", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="method options, e.g. n_steps=64 baseline=mask")
    p.add_argument("--pair", help="second text (sentence encoders: cosine similarity target)")
    p.add_argument("--kind", choices=KINDS, help="model kind")
    p.add_argument("--device", default="auto")
    p.add_argument("--html", help="also write a self-contained HTML heat map to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_handler)
