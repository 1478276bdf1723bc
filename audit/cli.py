"""``taudit`` — the command line.

Built-in commands: ``run``, ``list``, ``validate``. Others (``explain``, ``report``,
``dashboard``) are plug-ins from the ``transformer_audit.commands`` entry-point group, so the
engine never imports the reports or dashboard packages.

Exit codes: 0 ok; 1 a fail-severity policy check failed; 2 an error (bad config, a model that
cannot be loaded, a probe that failed).

No Python traceback reaches a user: an error that escapes a command is printed as one
``error: …`` line (exit code 2). ``--debug`` (anywhere on the command line) or ``TAUDIT_DEBUG=1``
re-raises it with the traceback, for developers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from audit.console import failed_check_lines, github_annotations, junit_xml, model_table, text_table
from audit.rundir_view import RunView
from audit.store import package_version
from audit.views import fmt_num, fmt_pval

EXIT_OK, EXIT_POLICY, EXIT_ERROR = 0, 1, 2


def _one_line_config(args: argparse.Namespace) -> Any:
    """The config of ``taudit run --model M --probes a,b --limit N`` (no YAML file): the default
    audit with its models and probes replaced by those given; explain steps only when no
    ``--probes`` narrows the audit."""
    from audit.config import ConfigError, default_config, parse_config
    from audit.probe import PROBES

    base = default_config().as_dict()
    if args.models:
        base["models"] = [{"name": m.strip()} for m in ",".join(args.models).split(",") if m.strip()]
    if args.probes:
        base["probes"] = [{"probe": p.strip()} for p in args.probes.split(",") if p.strip()]
        base["explain"] = []
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit must be ≥ 1, got {args.limit}")
        for spec in base["probes"]:
            if "max_items" not in PROBES.get(spec["probe"]).Options.model_fields:
                raise ConfigError(f"--limit: probe {spec['probe']!r} has no max_items option (it always scores "
                                  "its whole dataset); leave it out of --probes or drop --limit")
            spec.setdefault("options", {})["max_items"] = args.limit
    return parse_config(base, source="(command line)")


def _print_outcome(o: Any) -> None:
    """Status line, the headline table and the failed checks of one model's run."""
    print(f"{o.status:9s} {o.run_dir.path}" + (f"  verdict: {o.verdict.status}" if o.verdict is not None else ""))
    if o.run_dir.exists():
        print(model_table(o.run_dir, o.verdict))
    if o.verdict is not None:
        bad = failed_check_lines(o.verdict)
        if bad:
            print(f"policy {o.verdict.policy_name or o.verdict.policy_source}: {len(bad)} check(s) did not pass")
            for b in bad:
                print(f"  {b}")
    for f in (RunView(o.run_dir).report_findings() or [])[:3]:
        print(f"  • {f['text']}")
    for name in ("report.html", "model_card.md", "report.pdf"):
        if (o.run_dir.path / name).is_file():
            print(f"  {name:14s} {o.run_dir.path / name}")
    print()
    for e in o.errors:
        print(f"  error: {e}", file=sys.stderr)


def _cmd_run(args: argparse.Namespace) -> int:
    from audit.config import ConfigError, default_config, load_config, profile_config
    from audit.distributed import RankError, RankLost
    from audit.runner import run_audit

    try:
        one_line = bool(args.models or args.probes or args.limit is not None)
        if sum(bool(x) for x in (args.config, args.profile, one_line)) > 1:
            raise ConfigError("give one of a config file, --profile or --model/--probes/--limit, not both")
        if args.config:
            cfg = load_config(args.config)
        elif args.profile:
            cfg = profile_config(args.profile)
        elif one_line:
            cfg = _one_line_config(args)
        else:
            cfg = default_config()
        if args.no_report:
            cfg.report.enabled = False
        if args.formats:
            cfg.report.formats = [f.strip() for f in args.formats.split(",") if f.strip()]  # type: ignore[misc]
        if args.quiet:
            from audit.models import quiet_loading

            quiet_loading()
        outcomes = run_audit(cfg, out=args.out, run_id=args.run_id, policy=args.policy, progress=not args.quiet)
    except (ConfigError, ValueError, FileNotFoundError, RankError, RankLost) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    code = EXIT_OK
    shown = [o for o in outcomes if o.status != "worker"]  # a rank other than 0 under torchrun: rank 0 reports
    for o in shown:
        _print_outcome(o)
        if o.errors or o.status != "complete":
            code = EXIT_ERROR
        elif getattr(o.verdict, "failed", False) and code == EXIT_OK:  # a fail-severity check failed
            code = EXIT_POLICY
    verdicts = [o for o in shown if o.verdict is not None]
    if args.junit and verdicts:
        xml = junit_xml((o.run_dir.path.name, {"run_dir": str(o.run_dir.path), "verdict": o.verdict.status,
                                                "policy": o.verdict.policy_source}, o.verdict) for o in verdicts)
        Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
        Path(args.junit).write_text(xml, encoding="utf-8")
        print(f"junit: {args.junit}")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for o in verdicts:
            for line in github_annotations(o.verdict, o.run_dir.path.name):
                print(line)
    if shown:
        print(f"open the results: taudit dashboard {shown[0].run_dir.path.parent}")
    if code == EXIT_POLICY:
        world = os.environ.get("WORLD_SIZE", "1")
        print("verdict: fail — exit code 1 means a fail-severity policy check failed (listed above), not a crash"
              + (f"; torchrun (world size {world}) reports it as ChildFailedError" if world not in ("", "1") else ""))
    return code


def _columns(title: str, header: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> None:
    """A titled, indented :func:`~audit.console.text_table` without a rule."""
    print(f"{title}:")
    print(text_table(header, rows, rule=False, indent="  "))


def _cmd_list(args: argparse.Namespace) -> int:
    from audit.models import DEMO_MODELS
    from audit.probe import PROBES

    rows = [(name, ", ".join(PROBES.get(name).kinds), PROBES.get(name).description) for name in PROBES.names()]
    _columns("probes", ("name", "model kinds", "what it measures"), rows)
    try:
        from audit.explain import get_explainer, list_explainers

        _columns("explainers", ("name", "", "what it computes"),
                 [(n, "", get_explainer(n).description) for n in list_explainers()])
    except ImportError:
        pass
    demos = [(alias, d.kind, f"{d.description} [{d.licence}] — "
              + ("installed" if find_spec(d.module) else f"not installed ({d.install})"))
             for alias, d in DEMO_MODELS.items()]
    _columns("demo models", ("alias", "kind", "what"), demos)
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from audit.config import ConfigError, check_paths, load_config
    from audit.runner import _load_policy

    try:
        cfg = load_config(args.config)
        check_paths(cfg, args.config)
        _load_policy(cfg, None)  # the config's policy, if any: read and checked against the probes
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    models = f"{len(cfg.models)} model(s)" if cfg.models else "no model (logged predictions)"
    print(f"ok: {models}, {len(cfg.probes)} probe(s), {len(cfg.explain)} explain step(s)")
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    """Each metric of the probes two runs share: A, B, B − A and the test, then each probe's paired
    item test (:mod:`audit.compare`)."""
    from audit.compare import compare_runs  # scipy: loaded only for this command

    runs = [RunView(p) for p in (args.run_a, args.run_b)]
    for rd in runs:
        if not rd.exists():
            print(f"error: {rd.path} is not a run directory (no manifest.json)", file=sys.stderr)
            return EXIT_ERROR
    comparison = compare_runs(*runs)
    df = comparison.table
    if df.empty:
        print(f"no probe is complete in both {runs[0].path} and {runs[1].path}")
        return EXIT_OK
    rows = [[r["probe"], r["metric"], fmt_num(r["A"]), fmt_num(r["B"]), fmt_num(r["delta (B−A)"]), r["test"] or "—",
             fmt_pval(r["p_value"]), fmt_pval(r["p_adjusted"]), r["significant"]] for _, r in df.iterrows()]
    print(text_table(["probe", "metric", "A", "B", "B − A", "test", "p", "p (BH)", "significant"], rows, rule=False))
    for name, line in comparison.item_tests.items():
        print(f"{name} items: {line}")
    return EXIT_OK


def _cmd_data(args: argparse.Namespace) -> int:
    from audit.catalogue import DataError, catalogue, data_dir, entry, fetch, is_fetched

    root = Path(args.dir).expanduser() if args.dir else data_dir()
    if args.data_command == "list":
        rows = []
        for name, e in catalogue().items():
            size = sum(f["bytes"] for f in e["files"]) / 1e6
            state = "fetched" if is_fetched(name, root) else "not fetched"
            rows.append((name, f"{size:6.1f} MB", f"{e['title']} — licence: {e['licence']} — {state}"))
        _columns(f"datasets (in {root})", ("name", "size", "what"), rows)
        return EXIT_OK
    try:
        for name in args.names:
            e = entry(name)
            paths = fetch(name, root, mirror=args.mirror)
            print(f"{name}: {len(paths)} file(s) verified (sha256) in {root / e['data']}")
            print(f"  licence: {e['licence']} — source: {e['source']}")
            print(f"  in a config: data: {name}" + ("" if not args.dir else f"  (with TAUDIT_DATA_DIR={root})"))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="taudit", description="Bias and interpretability audits of Transformers.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("--debug", action="store_true",
                    help="show the Python traceback of an error (also TAUDIT_DEBUG=1; accepted anywhere on the line)")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run", help="run an audit (no arguments: the default audit on the demo models, judged by the "
                    "recommended policy)",
        description="Run an audit: every probe and explain step of the config on every model, one run "
                    "directory per model, reports at the end, then a table per model and the policy's "
                    "verdict. Without a config: the embedded default audit (demo models, policy "
                    "'recommended'). One-line runs without YAML: --model M --probes a,b --limit N. "
                    "Exit codes: 0 complete and no fail-severity check failed; 1 a fail-severity policy "
                    "check failed (not a crash); 2 an error (bad config, model cannot be loaded, a probe failed).")
    r.add_argument("config", nargs="?", help="audit YAML; omit for the default audit on the demo models")
    r.add_argument("--profile", help="a shipped audit profile instead of a config, e.g. 'tr' (every Turkish probe); "
                   "its data paths are read from the current folder")
    r.add_argument("--model", dest="models", action="append", metavar="M",
                   help="model to audit instead of the config's (demo alias, folder or hub id; repeat or comma-separate)")
    r.add_argument("--probes", metavar="A,B", help="probes to run instead of the default audit's (see taudit list)")
    r.add_argument("--limit", type=int, metavar="N", help="score at most N items per probe (probes with a max_items option)")
    r.add_argument("--out", help="runs root (default: the config's 'output', else ./runs)")
    r.add_argument("--run-id", help="run id; rerunning with the same id resumes")
    r.add_argument("--policy", help="policy YAML, or 'recommended' (the built-in profile); overrides the config's 'policy'")
    r.add_argument("--junit", metavar="FILE", help="also write the policy checks as JUnit XML (one test case per check)")
    r.add_argument("--format", dest="formats", help="report formats, e.g. html,pdf,md,json")
    r.add_argument("--no-report", action="store_true", help="skip writing reports")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars (nor the weight-loading bars)")
    r.set_defaults(func=_cmd_run)

    sub.add_parser("list", help="list probes, explainers and demo models").set_defaults(func=_cmd_list)

    v = sub.add_parser("validate", help="validate an audit config (and its policy) without running it",
                       description="Check an audit config without loading a model: its fields, probe names and "
                                   "options, that every data file and local model folder it names exists (naming "
                                   "the field), and its policy. Exit codes: 0 valid; 2 invalid (the message names "
                                   "the field).")
    v.add_argument("config", help="audit YAML to check")
    v.set_defaults(func=_cmd_validate)

    c = sub.add_parser("compare", help="compare the metrics of two runs, each with its significance test")
    c.add_argument("run_a", help="run directory A")
    c.add_argument("run_b", help="run directory B")
    c.set_defaults(func=_cmd_compare)

    d = sub.add_parser("data", help="list or fetch benchmark datasets (CrowS-Pairs, StereoSet, SEAT, BBQ, …)",
                       description="Fetch benchmarks from their official source URLs, verify each file's "
                                   "pinned sha256 and print the licence; a config can then say 'data: NAME'. "
                                   "Exit codes: 0 ok; 2 unknown name, download error or sha256 mismatch.")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dl = dsub.add_parser("list", help="the datasets, their size, licence and whether they are fetched")
    fe = dsub.add_parser("fetch", help="download and verify datasets")
    for x in (dl, fe):
        x.add_argument("--dir", help="data folder (default: $TAUDIT_DATA_DIR, else ~/.cache/transformer-audit/data)")
    fe.add_argument("names", nargs="+", metavar="NAME", help="dataset names from 'taudit data list'")
    fe.add_argument("--mirror", help="fetch the same paths from this base URL instead (also $TAUDIT_DATA_MIRROR)")
    d.set_defaults(func=_cmd_data)

    for ep in entry_points(group="transformer_audit.commands"):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken plug-in must not break the others
            logging.getLogger(__name__).warning("command plug-in %s failed to load: %s", ep.name, exc)
    return ap


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--debug`` (anywhere in ``argv``) or ``TAUDIT_DEBUG`` asks for tracebacks, and
    ``argv`` without it (plug-in subcommands need not declare the flag)."""
    env = os.environ.get("TAUDIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return env or "--debug" in argv, [a for a in argv if a != "--debug"]


def describe_error(exc: BaseException) -> str:
    """The message a user sees: the project's own errors (ValueError subclasses: bad config,
    probe input, model loading) speak for themselves; anything else keeps its type name."""
    msg = str(exc).strip() or repr(exc)
    return msg if isinstance(exc, ValueError) else f"{type(exc).__name__}: {msg}"


def main(argv: list[str] | None = None) -> int:
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    ap = build_parser()
    args = ap.parse_args(argv)
    args.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub", "matplotlib", "fontTools", "weasyprint"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    func: Any = args.func
    try:
        return int(func(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        print(f"error: {describe_error(exc)}", file=sys.stderr)
        print("(rerun with --debug or TAUDIT_DEBUG=1 to see the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
