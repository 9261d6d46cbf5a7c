"""End to end in a real browser: JupyterLab on 127.0.0.1 with a token, 03_unrealistic_details.ipynb
opened in headless Chromium through Playwright, run, the Explorer's layer changed, a 2:1 image
chosen (drawn 2:1, every map beside it), and a Gallery card opened in its own Explorer.

Needs Debian's Chromium at /usr/bin/chromium (``make browser`` installs it; override with
FAKESEGMENT_CHROMIUM). Screenshots go to data_cache/screenshots/.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import papermill as pm
import pytest

from support import NOTEBOOKS, REPO, UNPAIRED, tiny_store

CHROMIUM = os.environ.get("FAKESEGMENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SHOTS = REPO / "data_cache" / "screenshots"
NOTEBOOK = "03_unrealistic_details.ipynb"
EXPLORER = ".fakesegment-explorer"
MAP_IMG = f"{EXPLORER} .fakesegment-explorer-map img"
MAP_TITLE = f"{EXPLORER} .fakesegment-explorer-map .widget-html-content"
LAYER_SELECT = f"{EXPLORER} .widget-dropdown:has(label:text-is('layer')) select"
IMAGE_SELECT = f"{EXPLORER} .widget-dropdown:has(label:text-is('image')) select"
IMAGE_IMG = f"{EXPLORER} .fakesegment-explorer-image img"
OVERLAYS = f"{EXPLORER} .fakesegment-explorer-overlay"
GALLERY = ".fakesegment-gallery"
QUESTIONS = ("looks rendered here", "unusual details here", "differs from its real twin here")

# JupyterLab settings: no news/update prompts, every cell kept in the DOM
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a folder holding the notebook, parameterised for the tiny store."""
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    root = tmp_path_factory.mktemp("lab")
    pm.execute_notebook(str(NOTEBOOKS / NOTEBOOK), str(root / NOTEBOOK), prepare_only=True,
                        parameters={"store": str(tiny_store()), "top_k": 3}, progress_bar=False)
    settings = root.parent / "lab-settings"
    for name, value in SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root.parent / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(root.parent / "jupyter-runtime")}
    log = open(root.parent / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", f"--LabServerApp.user_settings_dir={settings}",
         f"--LabServerApp.workspaces_dir={root.parent / 'workspaces'}", "--LabApp.news_url=None",
         "--LabApp.extension_manager=readonly", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (root.parent / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "token": token, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_all(page, tries: int = 3) -> None:
    """Run All Cells once the kernel is connected; retry if no cell started (a click that lands
    before the session is ready runs nothing)."""
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)
    for _ in range(tries):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-InputArea-prompt')]"
                ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))", timeout=15_000)
            return
        except Exception:
            page.wait_for_timeout(2000)
    raise AssertionError("Run All Cells did not start any cell")


def test_explorer_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        try:
            # the token is required: without it the server answers with its login page
            page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK}")
            assert "/login" in page.url
            page.goto(f"{lab['url']}/lab/tree/{NOTEBOOK}?token={lab['token']}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            run_all(page)
            page.wait_for_selector(MAP_IMG, state="visible", timeout=60_000)
            assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] "
                                    ":text('Traceback')").count()
            explorer = page.locator(EXPLORER)
            explorer.scroll_into_view_if_needed()
            assert "Untrained weights" in explorer.inner_text()
            img = page.locator(MAP_IMG)
            page.wait_for_function("s => { const i = document.querySelector(s); return i && i.naturalWidth > 0; }",
                                   arg=MAP_IMG)
            before_src, before_png = img.get_attribute("src"), img.screenshot()
            assert "conv4_3" in page.locator(MAP_TITLE).first.inner_text()
            explorer.screenshot(path=str(SHOTS / "browser_explorer_conv4_3.png"))

            page.locator(LAYER_SELECT).select_option("conv8_2")
            page.wait_for_function("([s, old]) => { const i = document.querySelector(s);"
                                   " return i && i.src !== old && i.naturalWidth > 0; }",
                                   arg=[MAP_IMG, before_src], timeout=30_000)
            page.wait_for_timeout(300)  # let the new image paint
            assert "conv8_2" in page.locator(MAP_TITLE).first.inner_text()
            after_png = img.screenshot()
            assert after_png != before_png, "the displayed feature map did not change"
            explorer.screenshot(path=str(SHOTS / "browser_explorer_conv8_2.png"))

            # every map beside the image, titled by its question
            titles = [page.locator(OVERLAYS).nth(i).locator(".widget-html-content").first.inner_text()
                      for i in range(page.locator(OVERLAYS).count())]
            assert [any(q in t for t in titles) for q in QUESTIONS] == [True] * 3, titles
            # a 2:1 image is drawn 2:1 (the network saw it squashed into 300 x 300)
            before_src = page.locator(IMAGE_IMG).first.get_attribute("src")
            page.locator(IMAGE_SELECT).first.select_option(UNPAIRED)
            page.wait_for_function("([s, old]) => { const i = document.querySelector(s);"
                                   " return i && i.src !== old && i.naturalWidth > 0; }",
                                   arg=[IMAGE_IMG, before_src], timeout=30_000)
            size = page.locator(IMAGE_IMG).first.evaluate("i => [i.naturalWidth, i.naturalHeight, i.clientWidth,"
                                                          " i.clientHeight]")
            assert size[:2] == [300, 150] and abs(size[2] / size[3] - 2) < 0.05, size
            page.wait_for_timeout(300)
            assert "not in the store" in page.locator(OVERLAYS).nth(2).inner_text()
            explorer.screenshot(path=str(SHOTS / "browser_explorer_2to1.png"))

            # the Gallery: each card shows every map with its share; its button opens an Explorer
            gallery = page.locator(GALLERY)
            gallery.scroll_into_view_if_needed()
            text = gallery.inner_text()
            assert all(q in text for q in QUESTIONS) and "% of the image looks rendered" in text
            assert page.locator(EXPLORER).count() == 1
            gallery.locator("button", has_text="open in Explorer").first.click()
            page.wait_for_function("s => document.querySelectorAll(s).length === 2", arg=EXPLORER, timeout=30_000)
            gallery.screenshot(path=str(SHOTS / "browser_gallery.png"))
            page.screenshot(path=str(SHOTS / "browser_jupyterlab.png"))
        except Exception:
            page.screenshot(path=str(SHOTS / "browser_failure.png"))  # what the browser showed
            raise
        finally:
            browser.close()
