"""A real headless Chromium opens a ``report.html`` from disk: every image loads, nothing is fetched.

Playwright drives Debian's ``/usr/bin/chromium`` (no ``playwright install``). Every network
request the page makes is recorded; any that is not ``file:`` or ``data:`` fails the test.
A screenshot is saved in the test's tmp folder. The test ends on its own within a minute.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from anivision.metrics.classification import classification_metrics
from anivision.reports.classification import write_report

CHROMIUM = os.environ.get("ANIVISION_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no chromium binary: install Debian's chromium (apt-get install chromium) or set ANIVISION_CHROMIUM")
    return path


def _report(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    classes = ["happy", "sad", "angry", "embarrassed"]
    labels = rng.integers(0, 4, 120)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=120)
    probs[np.arange(60), labels[:60]] += 1.5
    probs /= probs.sum(axis=1, keepdims=True)
    metrics = classification_metrics(labels, probs, classes) | {"n_skipped": 0, "best_epoch": 2, "epochs_run": 3}
    history = [{"epoch": e, "train_loss": 1.2 / e, "train_acc": 0.3 * e, "val_loss": 1.0 / e + 0.1 * (e == 3), "val_acc": 0.25 * e} for e in (1, 2, 3)]
    out = tmp_path / "run"
    write_report(out, metrics, history, title="browser check <run>", sections=["## Extra", "", "Text with a [link](metrics.json).", ""])
    return out / "report.html"


def test_report_html_opens_offline_in_chromium(tmp_path):
    page_path = _report(tmp_path)
    requests: list[str] = []

    def too_long(signum, frame):
        raise TimeoutError("the browser test ran past 60 s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(60)  # the whole browser session, whatever hangs
    try:
        n_img, widths, title = _browse(page_path, tmp_path, requests)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert n_img >= 4 and len(widths) == n_img
    assert all(w > 0 for w in widths), widths
    assert title == "browser check <run>"
    outside = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not outside, outside
    assert any(u.startswith("file:") for u in requests)  # the page itself was recorded, so recording works
    assert (tmp_path / "report.png").stat().st_size > 10_000


def _browse(page_path: Path, tmp_path: Path, requests: list[str]) -> tuple[int, list[int], str]:
    """Open the page in headless Chromium, recording every request; (image count, natural widths, title)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=ARGS, headless=True, timeout=30_000)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load", timeout=30_000)
            n_img = page.eval_on_selector_all("img", "els => els.length")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            title = page.title()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True, timeout=30_000)
        finally:
            browser.close()
    return n_img, widths, title
