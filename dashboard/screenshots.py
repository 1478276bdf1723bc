"""Screenshots of every dashboard page, for the README: ``python -m dashboard.screenshots RUNS OUT``.

Starts ``taudit dashboard RUNS --port FREE`` (127.0.0.1, usage statistics off), opens each page in
headless Debian Chromium through Playwright, waits for it to finish rendering and saves
``OUT/<page>.png``. The Live page is shot after explaining ``--live-text`` with ``--live-model``
when a model is given. The browser test uses the same helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess  # nosec B404  # starts `taudit dashboard` from a fixed argv, no shell
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: page -> URL path (the default page, Runs, lives at the root)
PAGES = {"runs": "", "bias": "bias", "explain": "explain", "compare": "compare", "live": "live"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def taudit_command() -> list[str]:
    """``taudit`` next to this interpreter (the virtualenv's), else on PATH."""
    exe = Path(sys.executable).with_name("taudit")
    found = str(exe) if exe.is_file() else shutil.which("taudit")
    return [found] if found else [sys.executable, "-m", "audit.cli"]


def start_server(runs: Path, port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``taudit dashboard RUNS --port PORT`` in its own process group."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed by the caller's stop
    return subprocess.Popen([*taudit_command(), "dashboard", str(runs), "--port", str(port)],  # nosec B603  # fixed argv
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until Streamlit's health endpoint answers (or the server exits)."""
    url = f"http://127.0.0.1:{port}/_stcore/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310  # nosec B310  # our http://127.0.0.1 URL
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the dashboard did not answer on {url} within {timeout:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group, or the process alone when it leads none: SIGTERM, then
    SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    kill = os.killpg if os.getpgid(proc.pid) == proc.pid else os.kill
    try:
        kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def dashboard(runs: Path, log: Path | None = None) -> Iterator[str]:
    """A running dashboard over ``runs``; yields its base URL and always stops it."""
    port = free_port()
    proc = start_server(runs, port, log)
    try:
        wait_ready(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def wait_rendered(page: Any, title: str, timeout_ms: int = 60_000, skeleton_timeout_ms: int = 60_000) -> None:
    """Wait for the page's title, for Streamlit to stop running the script, for its lazily drawn
    elements to replace their grey placeholders (``stSkeleton``) and for charts to draw."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')",
        timeout=timeout_ms,
    )
    try:
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')",
                               timeout=skeleton_timeout_ms)
    except PlaywrightTimeout:  # elements below the fold stay placeholders until scrolled to
        logger.info("some elements of %s were still placeholders", title)
    page.wait_for_timeout(1000)  # Vega draws charts after the elements mount


def full_height(page: Any, title: str, max_height: int = 8000) -> None:
    """Grow the viewport to the page's content height and wait for it to draw again.

    Playwright's ``full_page`` screenshot resizes the page mid-capture, and Streamlit redraws its
    elements as grey placeholders while it does; a viewport as tall as the content avoids that.
    """
    height = page.evaluate(
        "() => Math.max(...['[data-testid=\"stMain\"]', '[data-testid=\"stAppViewContainer\"]', 'body']"
        ".map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight))"
    )
    width = page.viewport_size["width"]
    page.set_viewport_size({"width": width, "height": min(max_height, int(height) + 40)})
    wait_rendered(page, title)


def shoot(page: Any, url: str, title: str, out: Path, act: Callable[[Any], None] | None = None) -> Path:
    """Open ``url``, wait for the page ``title`` to draw (after ``act`` on it, if given) and save it whole."""
    page.goto(url)
    wait_rendered(page, title)
    if act is not None:
        act(page)
    full_height(page, title)
    page.screenshot(path=str(out))
    page.set_viewport_size({"width": page.viewport_size["width"], "height": 1000})
    return out


def _choose(page: Any, label: str, option_prefix: str) -> None:
    """Pick the option starting with ``option_prefix`` in the Streamlit selectbox ``label``."""
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option").filter(has_text=option_prefix).first.click()
    page.wait_for_timeout(500)


def live_explain(page: Any, model: str, text: str, method: str, timeout_ms: int = 900_000) -> None:
    """Load ``model`` (a folder or a demo alias) on the Live page, explain ``text`` with ``method``
    and wait for the attribution heatmap."""
    if Path(model).is_dir():
        box = page.get_by_label("Local model folder", exact=True)
        box.fill(str(Path(model).resolve()))
        box.press("Enter")
    else:
        _choose(page, "Model", f"{model} —")
    page.get_by_role("button", name="Load model").click()
    page.get_by_text("Loaded ").first.wait_for(timeout=timeout_ms)
    area = page.get_by_label("Text", exact=True)
    area.fill(text)
    area.press("Control+Enter")
    page.wait_for_timeout(500)
    _choose(page, "Method", f"{method} —")
    page.get_by_role("button", name="Explain").click()
    page.locator(".taudit-heatmap").first.wait_for(timeout=timeout_ms)
    wait_rendered(page, "Live", timeout_ms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.screenshots", description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="runs root")
    ap.add_argument("out", type=Path, help="folder for the PNG files")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--live-model", default=None, help="demo alias or model folder to explain on the Live page")
    ap.add_argument("--live-text", default="The nurse said that she would be late.")
    ap.add_argument("--live-method", default="ig")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if not Path(CHROMIUM).is_file():
        print(f"{CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    if not args.runs.is_dir():
        print(f"runs root {args.runs} does not exist", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with dashboard(args.runs, args.out / "server.log") as url, browser() as b:
        page = b.new_page(viewport={"width": args.width, "height": 1000})
        for name, url_path in PAGES.items():
            act = (partial(live_explain, model=args.live_model, text=args.live_text, method=args.live_method)
                   if name == "live" and args.live_model else None)
            shoot(page, f"{url}/{url_path}", name.capitalize(), args.out / f"{name}.png", act)
            logger.info("saved %s", args.out / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
