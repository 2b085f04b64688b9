"""A live server and headless Chromium for the browser tests (tests/integration/test_browser.py).

- `LiveServer`: this process's Django (the test database, the run's Elasticsearch prefix and
  queues) served over HTTP on a free loopback port from a thread, as a visitor reaches it.
- `chromium()`: Debian's chromium driven through Debian's chromedriver (`make test` installs
  both: scripts/services.py install chromium), headless, never a browser fetched at run time.
- `screenshot()`: the whole page at 1280 px and at 375 px wide, into docs/screenshots/ when
  `SCREENSHOTS_DIR` says so (`make screenshots`), else into a scratch folder, so that `make test`
  leaves the checkout as it found it.
"""
from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
from pathlib import Path

from tests.support.workers import ROOT

WIDTHS = ((1280, 900), (375, 800))
MAX_SCREENSHOT_HEIGHT = 4000


class LiveServer:
    def __init__(self):
        from django.contrib.staticfiles.handlers import StaticFilesHandler
        from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
        from django.core.wsgi import get_wsgi_application

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, *args):  # the test output stays readable
                pass

        self.httpd = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
        self.httpd.set_app(StaticFilesHandler(get_wsgi_application()))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "LiveServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def chromium():
    """Headless Chromium at 1280x900 through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        raise RuntimeError("chromium and chromedriver are needed: `make chromium` (python3 scripts/services.py "
                           "install chromium) installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--lang=en-US", "--hide-scrollbars"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    chrome.set_page_load_timeout(120)
    return chrome


def set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def screenshots_dir() -> Path:
    """$SCREENSHOTS_DIR (relative to the checkout) when set, else a scratch folder."""
    chosen = os.environ.get("SCREENSHOTS_DIR")
    folder = ROOT / chosen if chosen else Path(tempfile.gettempdir()) / "searchsite-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver, name: str, dark: bool = False) -> list[Path]:
    """<name>-<width>.png of the whole page at each width, in screenshots_dir(); the viewport
    is 1280x900 again afterwards."""
    folder = screenshots_dir()
    written = []
    if dark:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                               {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        for width, height in WIDTHS:
            set_viewport(driver, width, height)
            page_height = driver.execute_script("return document.documentElement.scrollHeight")
            shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(max(page_height, height), MAX_SCREENSHOT_HEIGHT),
                         "scale": 1}})
            path = folder / f"{name}-{width}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            written.append(path)
    finally:
        set_viewport(driver, *WIDTHS[0])
        if dark:
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    return written
