"""The page in headless Chromium: pick a photo through the form, wait for the segmentation, check it, screenshot.

Set ``LABCODE_SCREENSHOT_DIR`` to keep the screenshot somewhere else than the test's temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from labcode.classes import CLASS_COLORS, CLASSES
from tests.test_serve import decode_png, encode, photo, running_server, tiny_model

pytestmark = pytest.mark.browser

#: JavaScript returning the distinct colours of an <img> (drawn on a canvas) and its natural size.
READ_PIXELS = """
const img = document.getElementById(arguments[0]);
const canvas = document.createElement("canvas");
canvas.width = img.naturalWidth;
canvas.height = img.naturalHeight;
const context = canvas.getContext("2d");
context.drawImage(img, 0, 0);
const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
const colours = new Set();
for (let i = 0; i < data.length; i += 4) colours.add(`${data[i]},${data[i + 1]},${data[i + 2]},${data[i + 3]}`);
return [canvas.width, canvas.height, Array.from(colours)];
"""

#: JavaScript returning the ``id`` of each <img> laid out on the page (not hidden) that shows no picture: a broken-image
#: icon (no source, a source that failed, or one still loading).
VISIBLY_BROKEN = """
return Array.from(document.images)
  .filter((img) => img.getClientRects().length > 0 && !(img.complete && img.naturalWidth > 0))
  .map((img) => img.id || img.getAttribute("src") || "(no source)");
"""


def test_page_uploads_a_photo_and_shows_its_segmentation(chromium, tmp_path, tmp_path_factory):
    browser = chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model = tiny_model(tmp_path_factory)
    width, height = 320, 240
    photo_path = tmp_path / "room.jpg"
    photo_path.write_bytes(encode(photo(width, height, seed=5), "JPEG", quality=92))
    with running_server(model, tmp_path / "server.log", "--max-upload-mb", "1") as url:
        browser.get(f"{url}/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#legend li")) == len(CLASSES))
        assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")] == list(CLASSES)
        assert model.name in browser.find_element(By.ID, "model").text
        assert browser.execute_script(VISIBLY_BROKEN) == [], "broken-image frames before the first upload"
        assert not browser.find_element(By.ID, "input").is_displayed()
        assert not browser.find_element(By.ID, "result").is_displayed()

        browser.find_element(By.ID, "file").send_keys(str(photo_path))
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(("done", "error", "request failed")))
        assert browser.find_element(By.ID, "status").text.startswith(f"done: {width}x{height}")
        wait.until(lambda d: d.execute_script("return document.getElementById('input').naturalWidth") > 0)
        assert browser.execute_script(VISIBLY_BROKEN) == [], "broken images after the upload"
        assert all(browser.find_element(By.ID, name).is_displayed() for name in ("input", "result"))

        shown_width, shown_height, colours = browser.execute_script(READ_PIXELS, "result")
        assert (shown_width, shown_height) == (width, height)
        legend = {f"{r},{g},{b},255" for r, g, b in CLASS_COLORS.tolist()}
        assert set(colours) <= legend  # the page shows the mask (its default view): legend colours only
        api = decode_png(httpx.post(f"{url}/segment", files={"file": ("room.jpg", photo_path.read_bytes())},
                                    params={"view": "mask"}, timeout=60).content)
        assert set(colours) == {f"{r},{g},{b},255" for r, g, b in np.unique(api.reshape(-1, 3), axis=0).tolist()}

        screenshot_dir = Path(os.environ.get("LABCODE_SCREENSHOT_DIR", tmp_path))
        screenshot_dir.mkdir(parents=True, exist_ok=True)
        screenshot = screenshot_dir / "serve_page.png"
        assert browser.save_screenshot(str(screenshot))
        with Image.open(screenshot) as shot:
            assert shot.size[0] >= 1000 and shot.size[1] >= 500
            pixels = np.asarray(shot.convert("RGB")).reshape(-1, 3)
        present = {tuple(c) for c in np.unique(api.reshape(-1, 3), axis=0).tolist()} - {(0, 0, 0)}
        on_screen = {tuple(c) for c in np.unique(pixels, axis=0).tolist()}
        assert present & on_screen  # the segmentation's colours are visible in the screenshot

        not_image = tmp_path / "notes.txt"
        not_image.write_text("not a photo")
        browser.find_element(By.ID, "file").send_keys(str(not_image))
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("error"))
        assert "error 400: notes.txt is not an image" in browser.find_element(By.ID, "status").text
        # The browser cannot draw the text file either: its frame is hidden, never shown as a broken image, and the
        # last segmentation stays on display.
        wait.until(lambda d: not d.find_element(By.ID, "input").is_displayed())
        assert browser.execute_script(VISIBLY_BROKEN) == [], "a broken image after uploading a file that is no photo"
        assert browser.find_element(By.ID, "result").is_displayed()


def test_the_api_documentation_works_offline(chromium, tmp_path, tmp_path_factory):
    # The browser cannot resolve any host but this machine: Swagger UI must come from the server itself.
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server(tiny_model(tmp_path_factory), tmp_path / "server.log") as url:
        chromium.get(f"{url}/docs")
        wait = WebDriverWait(chromium, 60)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock-summary-path"))
        paths = {e.text.replace("\u200b", "") for e in chromium.find_elements(By.CSS_SELECTOR,
                                                                                ".swagger-ui .opblock-summary-path")}
        assert {"/segment", "/health"} <= paths, paths
        scripts = chromium.execute_script("return Array.from(document.scripts).map(s => s.src).filter(s => s)")
        assert scripts and all(src.startswith(url) for src in scripts), scripts
