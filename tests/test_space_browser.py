"""The Gradio Space in a real browser: headless Chromium uploads a video and sees the label and the timeline.

Needs Debian's ``chromium`` (``.ci/run`` installs it); the screenshot lands in ``test-artifacts/space.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from space_server import space_server

from gestures_hub.synthetic import SeizureSpec
from gestures_hub.synthetic_render import render_video

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "test-artifacts" / "space.png"
TIMEOUT_MS = 60_000


def test_browser_upload_shows_label_and_timeline(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run .ci/run (apt-get install chromium)"
    url = space_server().url
    spec = SeizureSpec(patient="browser", seizure="01", label="TCS", duration=8.0, fps=15, width=160, height=120,
                       seed=5)
    video = render_video(spec, tmp_path / "browser_upload.mp4")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            expect(page.locator("#demo-notice")).to_contain_text("synthetic", timeout=TIMEOUT_MS)
            page.locator("input[type=file]").first.set_input_files(str(video))
            expect(page.locator("#model")).to_contain_text("GESTURES demo model", timeout=TIMEOUT_MS)
            expect(page.get_by_text("Synthetic TCS (", exact=False).first).to_be_visible(timeout=TIMEOUT_MS)
            page.get_by_role("button", name="Analyse").click()
            # a synthetic TCS video (seed 5, never trained on): the demo model must say TCS, not merely list it
            expect(page.locator("#details")).to_contain_text("Prediction: TCS", timeout=TIMEOUT_MS)
            expect(page.locator("#timeline img")).to_be_visible(timeout=TIMEOUT_MS)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
