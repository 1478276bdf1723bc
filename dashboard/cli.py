"""``taudit dashboard [RUNS_DIR] [--port N]`` — a command plug-in (entry-point group
``transformer_audit.commands``) that starts the Streamlit app bound to 127.0.0.1 with usage
statistics off.

Streamlit is started in this package's folder so its ``.streamlit/config.toml`` applies, and the
same settings are passed as flags so they hold whatever config a user has elsewhere.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess  # nosec B404  # starts Streamlit from a fixed argv, no shell
import sys
from pathlib import Path

from dashboard import RUNS_ENV

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
DEFAULT_PORT = 8501


def streamlit_args(runs_dir: Path, port: int) -> list[str]:
    """The ``python -m streamlit run`` command line for ``runs_dir`` on 127.0.0.1:``port``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", "127.0.0.1",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.enableStaticServing", "false",
        "--server.enableXsrfProtection", "true",
        "--server.enableCORS", "true",
        "--client.showErrorDetails", "type",
        "--", "--runs-dir", str(runs_dir),
    ]


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--port {text!r} is not a number") from exc
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"--port {n} is outside 1..65535")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``dashboard`` subcommand to ``taudit``."""
    p = subparsers.add_parser(
        "dashboard",
        help="open the Streamlit dashboard over a runs folder",
        description="Start the dashboard on http://127.0.0.1:PORT over the run directories in RUNS_DIR "
                    "(usage statistics off; it reads nothing outside RUNS_DIR except on the Live page, "
                    "which loads the model you name).",
    )
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="folder holding run directories (default: ./runs)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replace this process with Streamlit (so stopping ``taudit`` stops the server)."""
    root = Path(args.runs_dir).expanduser().resolve()
    if not root.is_dir():
        print(f"taudit dashboard: runs folder {root} does not exist or is not a folder", file=sys.stderr)
        return 2
    cmd = streamlit_args(root, args.port)
    env = {**os.environ, RUNS_ENV: str(root)}
    print(f"transformer-audit dashboard on http://127.0.0.1:{args.port}  (runs: {root})", flush=True)
    os.chdir(HERE)
    if os.name == "posix":
        os.execve(cmd[0], cmd, env)  # nosec B606  # sys.executable with a fixed argv
    return subprocess.call(cmd, env=env)  # pragma: no cover  # nosec B603  # fixed argv, no shell


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard.cli RUNS_DIR --port N`` (the same as ``taudit dashboard``)."""
    parser = argparse.ArgumentParser(prog="taudit")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["dashboard", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
