"""``taudit dashboard [RUNS_DIR] [--port N] [--host ADDR] [--live-models A,B]`` — a command plug-in
(entry-point group ``transformer_audit.commands``) that starts the Streamlit app, bound to
127.0.0.1 by default, with usage statistics off.

Sharing with a team: ``--host`` other than a loopback address needs a shared access token
(``$TAUDIT_DASHBOARD_TOKEN`` or ``--token-file``, at least 16 characters), checked in constant time
before any page renders (``?token=…`` in the URL once, or typed into the form); the command refuses
to start without one. On such a dashboard the Live page loads only the models of ``--live-models``
(never a path typed into the page), and none when the flag is absent.

Streamlit is started in this package's folder so its ``.streamlit/config.toml`` applies, and the
same settings are passed as flags so they hold whatever config a user has elsewhere.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import subprocess  # nosec B404  # starts Streamlit from a fixed argv, no shell
import sys
from pathlib import Path

from dashboard import LIVE_ENV, RUNS_ENV, TOKEN_ENV

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
DEFAULT_PORT = 8501
LOOPBACK = "127.0.0.1"
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def streamlit_args(runs_dir: Path, port: int, host: str = LOOPBACK) -> list[str]:
    """The ``python -m streamlit run`` command line for ``runs_dir`` on ``host``:``port``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", host if is_loopback(host) else "localhost",
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
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--host", default=LOOPBACK,
                   help="address to bind (default 127.0.0.1). Any non-loopback address (e.g. 0.0.0.0) needs a "
                        f"shared access token in ${TOKEN_ENV} or --token-file")
    p.add_argument("--token-file", help="file holding the shared access token (one line, ≥ 16 characters)")
    p.add_argument("--live-models", help="comma-separated demo aliases or model folders the Live page may load; "
                                         "on a shared dashboard the Live page loads nothing else")
    p.set_defaults(func=run)


def _token(args: argparse.Namespace) -> str:
    if getattr(args, "token_file", None):
        path = Path(args.token_file).expanduser()
        if not path.is_file():
            raise ValueError(f"--token-file {path} does not exist")
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get(TOKEN_ENV, "").strip()


def run(args: argparse.Namespace) -> int:
    """Replace this process with Streamlit (so stopping ``taudit`` stops the server)."""
    root = Path(args.runs_dir).expanduser().resolve()
    if not root.is_dir():
        print(f"taudit dashboard: runs folder {root} does not exist or is not a folder", file=sys.stderr)
        return 2
    host = getattr(args, "host", LOOPBACK) or LOOPBACK
    try:
        token = _token(args)
    except ValueError as exc:
        print(f"taudit dashboard: {exc}", file=sys.stderr)
        return 2
    env = {**os.environ, RUNS_ENV: str(root)}
    env.pop(TOKEN_ENV, None)
    env.pop(LIVE_ENV, None)
    if not is_loopback(host):
        if len(token) < MIN_TOKEN:
            print(f"taudit dashboard: --host {host} shares the dashboard beyond this machine, so it needs an "
                  f"access token: set {TOKEN_ENV} to a secret of at least {MIN_TOKEN} characters (e.g. "
                  f"`export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')`) or "
                  "give --token-file FILE, then share the token with your team. Refusing to start.", file=sys.stderr)
            return 2
        env[LIVE_ENV] = getattr(args, "live_models", None) or ""
    elif getattr(args, "live_models", None):
        env[LIVE_ENV] = args.live_models
    if token:
        env[TOKEN_ENV] = token
    cmd = streamlit_args(root, args.port, host)
    shown = host if is_loopback(host) else f"{host} (token required)"
    print(f"transformer-audit dashboard on http://{shown}:{args.port}  (runs: {root})", flush=True)
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
