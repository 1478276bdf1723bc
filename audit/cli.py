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
from typing import Any

EXIT_OK, EXIT_POLICY, EXIT_ERROR = 0, 1, 2


def _cmd_run(args: argparse.Namespace) -> int:
    from audit.config import ConfigError, default_config, load_config, profile_config
    from audit.runner import run_audit

    try:
        if args.config and args.profile:
            raise ConfigError("give either a config file or --profile, not both")
        cfg = (load_config(args.config) if args.config else profile_config(args.profile) if args.profile
               else default_config())
        if args.no_report:
            cfg.report.enabled = False
        if args.formats:
            cfg.report.formats = [f.strip() for f in args.formats.split(",") if f.strip()]  # type: ignore[misc]
        outcomes = run_audit(cfg, out=args.out, run_id=args.run_id, policy=args.policy, progress=not args.quiet)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    code = EXIT_OK
    for o in outcomes:
        if o.status == "worker":  # a rank other than 0 under torchrun: rank 0 reports
            continue
        line = f"{o.status:9s} {o.run_dir.path}"
        if o.verdict is not None:
            line += f"  verdict: {o.verdict.status}"
        print(line)
        for e in o.errors:
            print(f"  error: {e}", file=sys.stderr)
        if o.errors or o.status != "complete":
            code = EXIT_ERROR
        elif o.policy_failed and code == EXIT_OK:
            code = EXIT_POLICY
    return code


def _cmd_list(args: argparse.Namespace) -> int:
    from audit.models import DEMO_MODELS, _package_dir
    from audit.probe import PROBES

    print("probes:")
    for name in PROBES.names():
        cls = PROBES.get(name)
        print(f"  {name:22s} {', '.join(cls.kinds):40s} {cls.description}")
    try:
        from audit.explain import list_explainers

        print("explainers:")
        for name in list_explainers():
            print(f"  {name}")
    except ImportError:
        pass
    print("demo models:")
    for alias, d in DEMO_MODELS.items():
        try:
            _package_dir(d.module, alias, d.install)
            state = "installed"
        except Exception:
            state = f"not installed ({d.install})"
        print(f"  {alias:14s} {d.kind:10s} {d.description} [{d.licence}] — {state}")
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from audit.config import ConfigError, load_config

    try:
        cfg = load_config(args.config)
        if cfg.policy is not None:
            from audit.runner import _load_policy

            _load_policy(cfg, None)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(f"ok: {len(cfg.models)} model(s), {len(cfg.probes)} probe(s), {len(cfg.explain)} explain step(s)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="taudit", description="Bias and interpretability audits of Transformers.")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("--debug", action="store_true",
                    help="show the Python traceback of an error (also TAUDIT_DEBUG=1; accepted anywhere on the line)")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run an audit config (no config: the embedded default audit)")
    r.add_argument("config", nargs="?", help="audit YAML; omit for the default audit on the demo models")
    r.add_argument("--profile", help="a shipped audit profile instead of a config, e.g. 'tr' (every Turkish probe); "
                   "its data paths are read from the current folder")
    r.add_argument("--out", help="runs root (default: the config's 'output', else ./runs)")
    r.add_argument("--run-id", help="run id; rerunning with the same id resumes")
    r.add_argument("--policy", help="policy YAML (overrides the config's 'policy')")
    r.add_argument("--format", dest="formats", help="report formats, e.g. html,pdf,md,json")
    r.add_argument("--no-report", action="store_true", help="skip writing reports")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)

    li = sub.add_parser("list", help="list probes, explainers and demo models")
    li.set_defaults(func=_cmd_list)

    v = sub.add_parser("validate", help="validate an audit config (and its policy)")
    v.add_argument("config")
    v.set_defaults(func=_cmd_validate)

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
