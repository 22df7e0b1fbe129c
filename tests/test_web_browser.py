"""``anivision serve`` in a real headless Chromium (Playwright): upload, result, no request off the machine.

The server runs as a subprocess on 127.0.0.1 with a tiny trained run; the browser uploads an
image, waits for the answer and checks that the predicted label and the Grad-CAM++ overlay are
shown, then that a bad upload shows its message and the next good upload still works. Every
request the page makes is recorded; any to a host other than loopback fails the test. A
screenshot is saved. Every wait takes its timeout from one budget (BUDGET_S), so the test ends on
its own within 2 minutes.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from anivision.cli import main

from conftest import TINY_CNN, make_class_folders

CHROMIUM = os.environ.get("ANIVISION_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: Seconds for the whole test: every wait (server start, browser, page, answers) gets what is left.
BUDGET_S = 110


def start_server(args: list[str], log: Path, deadline: float) -> tuple[subprocess.Popen, str]:
    """``anivision serve ARGS --port 0`` in a subprocess, and the URL it prints."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "anivision.cli", "serve", *args, "--host", "127.0.0.1", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        with open(log, "w") as fh:
            for line in proc.stdout:  # type: ignore[union-attr]
                fh.write(line)
                fh.flush()
                lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        found = re.search(r"anivision serve: (http://\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"anivision serve did not print its URL in time (or it stopped):\n{log.read_text()}")


def test_serve_in_a_real_browser_offline(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ANIVISION_CHROMIUM)")
    deadline = time.monotonic() + BUDGET_S

    def left_ms() -> float:
        """Milliseconds left of the test's budget (at least 1 s, so a late step fails by its own timeout)."""
        return max(1.0, deadline - time.monotonic()) * 1000

    data = make_class_folders(tmp_path / "data", n_classes=3, n_per_class=10)
    run = tmp_path / "run"
    assert main(["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--batch-size", "8", "--epochs", "10", "--strategy", "linear_probe", "--lr-head", "0.05",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(run)]) == 0
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image\n")

    proc, url = start_server(["--run", str(run), "--top-k", "3"], tmp_path / "server.log", deadline)
    requests: list[str] = []
    try:
        assert urlparse(url).hostname == "127.0.0.1"
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=left_ms())
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 700})
                page.set_default_timeout(left_ms())
                page.on("request", lambda r: requests.append(r.url))
                page.goto(url)
                page.wait_for_function("() => document.getElementById('models').textContent.includes('run (3 classes)')")

                page.set_default_timeout(left_ms())
                page.set_input_files("#files", str(data / "class1" / "img002.png"))
                page.click("#go")
                page.wait_for_selector("[data-testid=face]")
                labels = page.locator("[data-testid=classifier] td.label").all_text_contents()
                assert labels[0] == "class1" and len(labels) == 3
                overlay = page.locator("img.overlay").first
                assert overlay.get_attribute("alt") == "Grad-CAM++ of class1"
                page.wait_for_function("() => document.querySelector('img.overlay').complete")
                assert overlay.evaluate("img => img.naturalWidth") > 0
                assert page.locator("#error").is_hidden()
                page.screenshot(path=str(tmp_path / "app.png"), full_page=True)

                page.set_default_timeout(left_ms())
                page.set_input_files("#files", str(bad))  # a bad upload: the message, in the page
                page.click("#go")
                page.wait_for_selector("#error", state="visible")
                assert "notes.txt: not an image" in page.locator("#error").inner_text()
                page.set_default_timeout(left_ms())
                page.set_input_files("#files", str(data / "class2" / "img003.png"))  # still serving
                page.click("#go")
                page.wait_for_function("() => document.querySelector('[data-testid=classifier] td.label')?.textContent === 'class2'")
                assert page.locator("#error").is_hidden()
            finally:
                browser.close()
    finally:
        proc.terminate()  # SIGTERM: the server removes its temporary folder and exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, (tmp_path / "server.log").read_text()  # a clean exit on SIGTERM
    assert (tmp_path / "app.png").stat().st_size > 0
    assert any(u.endswith("/api/analyse") for u in requests)
    outside = [u for u in requests if urlparse(u).scheme not in ("data", "blob", "about") and urlparse(u).hostname not in LOOPBACK]
    assert not outside, f"the page asked hosts other than loopback: {outside}"
