"""End to end in a real browser: Debian's Chromium, driven by Playwright, against ``streamlit run``.

Upload a real film and see its probabilities and Grad-CAM, and unreadable files whose names hold markup and web
addresses see their errors as plain text; see the ROC chart on the comparison page; start a
one-epoch retrain on a small subset and see it finish and appear as a new version. Screenshots go to
``test-output/e2e/``. Under ``CI=true`` a missing Chromium or missing data fails the test; locally a missing
Chromium skips it.
"""
from __future__ import annotations

import os
import shutil

import pytest
from e2e_support import (CHROMIUM_ARGS, ROOT, TRAIN_DIR, StreamlitServer, chromium, quick_checkpoints, real_films,
                         require, wait_for_loaded_images)

SCREENSHOTS = ROOT / "test-output" / "e2e"
WAIT_MS = 90_000
# Upload names the browser's Markdown would draw as links, an image or bold text if a page let it read them.
HOSTILE_NAMES = ["www.evil.example.png", "see https://evil.example", "admin@evil.example.png",
                 "<img src=x onerror=alert(1)> **bold** [link](http://evil.example).png"]


def _shoot(page, name: str) -> None:
    """Full-height screenshot: Streamlit scrolls inside its own container, so grow the window to fit."""
    height = page.evaluate(
        "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], section.main, body')]"
        ".map(e => e.scrollHeight))")
    page.set_viewport_size({"width": 1440, "height": min(max(900, int(height) + 40), 6000)})
    page.wait_for_timeout(600)  # let charts re-layout to the new size
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
    page.set_viewport_size({"width": 1440, "height": 1000})


def _choose(page, label: str, option: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text=label).click()
    page.get_by_role("option", name=option, exact=True).click()


@pytest.mark.slow
def test_triage_compare_and_retrain_in_a_browser(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    browser_path = chromium()
    films = real_films()
    pneumonia = next(f for f in films if f.parent.name == "PNEUMONIA")
    require(TRAIN_DIR, "the Kermany train split")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    checkpoints = quick_checkpoints(tmp_path / "checkpoints")
    env = {**os.environ, "CXR_MODELS": str(checkpoints), "CXR_JOBS": str(tmp_path / "jobs"),
           "CXR_DATA_DIR": str(TRAIN_DIR)}

    with StreamlitServer(env, tmp_path / "streamlit.log") as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(browser_path), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # Triage: upload a real full-resolution film; wait for its probabilities and its Grad-CAM overlay. Beside
        # it, unreadable files whose names hold markup and web addresses: each gets its error, as plain text.
        page.goto(server.url)
        expect(page.get_by_role("heading", name="Triage")).to_be_visible()
        expect(page.get_by_test_id("stSidebar").get_by_text("pneumonia-cnn5-v1")).to_be_visible()
        uploads = [{"name": pneumonia.name, "mimeType": "image/jpeg", "buffer": pneumonia.read_bytes()}] + [
            {"name": name, "mimeType": "application/octet-stream", "buffer": b"not a film"} for name in HOSTILE_NAMES]
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(uploads)
        expect(page.get_by_test_id("stAlertContentError")).to_have_count(len(HOSTILE_NAMES))
        expect(page.get_by_test_id("stAlertContentError").locator("a, img, strong, em")).to_have_count(0)
        expect(page.get_by_text("Class probabilities")).to_be_visible()
        expect(page.get_by_text("Grad-CAM for", exact=False)).to_be_visible()
        wait_for_loaded_images(page, 3)  # the film, its overlay and its colour bar, decoded by the browser
        expect(page.get_by_test_id("stDataFrame")).to_be_visible()
        expect(page.get_by_test_id("stException")).to_have_count(0)
        _shoot(page, "01-triage.png")

        # Comparison: the ROC chart with both registered models.
        page.get_by_test_id("stSidebarNav").get_by_text("Compare models").click()
        expect(page.get_by_role("heading", name="ROC curves")).to_be_visible()
        expect(page.locator(".js-plotly-plot").filter(has_text="pneumonia-cnn5-v1 (AUC")).to_be_visible()
        expect(page.get_by_test_id("stException")).to_have_count(0)
        _shoot(page, "02-compare.png")

        # Retrain: one epoch on a small subset, in the background; it finishes and registers a new version.
        page.get_by_test_id("stSidebarNav").get_by_text("Retrain").click()
        expect(page.get_by_role("heading", name="New training job")).to_be_visible()
        page.get_by_role("spinbutton", name="Epochs").fill("1")
        _choose(page, "Image size", "64 × 64 px")
        page.get_by_role("spinbutton", name="Use at most this many films").fill("120")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Running").or_(page.get_by_text("Starting")).first).to_be_visible()
        _shoot(page, "03-retrain-running.png")
        finished = page.get_by_test_id("stAlertContentSuccess").filter(has_text="Registered pneumonia-cnn5-v2")
        expect(finished.first).to_be_visible(timeout=180_000)  # .first: the old frame may still be fading out
        expect(page.get_by_role("button", name="Make pneumonia-cnn5-v2 the default")).to_be_visible()
        expect(page.get_by_test_id("stPageLink").get_by_text("Compare it with the other models")).to_be_visible()
        _shoot(page, "04-retrain-finished.png")

        # The new version is on the comparison page next to the old ones.
        page.get_by_test_id("stSidebarNav").get_by_text("Compare models").click()
        expect(page.locator(".js-plotly-plot").filter(has_text="pneumonia-cnn5-v2 (AUC")).to_be_visible()
        _shoot(page, "05-compare-with-new-version.png")
        browser.close()

    assert not errors, errors
    assert {p.name for p in SCREENSHOTS.glob("*.png")} == {
        "01-triage.png", "02-compare.png", "03-retrain-running.png", "04-retrain-finished.png",
        "05-compare-with-new-version.png"}
    assert (checkpoints / "pneumonia-cnn5-v2.json").exists()
    shutil.copy(tmp_path / "streamlit.log", SCREENSHOTS / "streamlit.log")
