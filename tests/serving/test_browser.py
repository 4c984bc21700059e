"""The try-it page in a real headless Chromium (Debian `chromium`, driven by Playwright)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import TINY, free_port, toy_texts, wait_ready

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")


def test_page_classifies_and_draws_heat_map(tiny_bert: Path, tmp_path: Path) -> None:
    from niche import TextClassifier

    tr, ty = toy_texts(160, seed=1)
    d = TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(tr, ty).save(tmp_path / "reviews")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "niche", "serve", str(d), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page()
            page.goto(base + "/")
            page.wait_for_selector("#model option[value='reviews']", state="attached")
            page.fill("#text", "the food was great")
            page.click("#go")
            page.wait_for_selector(".bar-row")
            page.wait_for_selector(".tok")
            bars = page.locator(".bar-row")
            assert bars.count() == 2
            assert bars.first.locator("span").first.inner_text() == "pos"
            toks = page.locator(".tok")
            assert toks.first.inner_text() == "[CLS]" and toks.count() == 6
            assert "rgba(239, 68, 68" in toks.nth(1).get_attribute("style")
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
