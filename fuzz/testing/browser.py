"""A real headless browser for tests: Debian's Chromium driven by Selenium.

:func:`headless_chromium` starts Debian's ``chromium`` through its ``chromedriver``
(packages ``chromium`` and ``chromium-driver``; Selenium is told both paths, so its
Selenium Manager never downloads a browser or a driver) and yields a :class:`Browser`:
the WebDriver plus waits on a condition (an element, its text, a new window) instead
of sleeps.

The flags, and why:

- ``--headless=new``: no display; the same browser as the windowed one.
- ``--no-sandbox``: Chromium's setuid/namespace sandbox refuses to start as root,
  which the tests are (runc needs it). The pages it loads are the tests' own, served
  on 127.0.0.1, so the sandbox guards against nothing here.
- ``--disable-dev-shm-usage``: shared memory in a temporary file, not in a possibly
  tiny ``/dev/shm`` (containers, CI runners), where Chromium's renderers crash.
- ``--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1``, the
  background networking, component updates, sync and metrics turned off: the browser reaches
  127.0.0.1 and nothing else (the workplace's network rule), whatever a page asks.
- ``--user-data-dir``: a fresh profile per browser, removed after.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from fuzz.testing.oci import require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_TIMEOUT = 60.0
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--window-size=1280,1024",
)
"""Chromium's command-line flags (see the module's docstring for why each)."""


class BrowserWaitError(AssertionError):
    """What a test waited for in the page did not come; says what and shows the page."""


@dataclass
class Browser:
    """A running headless Chromium: ``driver`` is Selenium's, the methods wait."""

    driver: webdriver.Chrome
    timeout: float = WAIT_TIMEOUT

    def until(self, condition: Callable[[webdriver.Chrome], object], what: str,
              timeout: float | None = None) -> object:
        """Wait until ``condition(driver)`` is truthy and return it; BrowserWaitError
        naming ``what`` (with the page's address and title) when it does not come."""
        try:
            return WebDriverWait(self.driver, timeout or self.timeout).until(condition)
        except TimeoutException:
            raise BrowserWaitError(
                f"{what}: not there after {timeout or self.timeout:.0f} s on "
                f"{self.driver.current_url} ({self.driver.title!r})") from None

    def element(self, css: str, timeout: float | None = None) -> WebElement:
        """The first element matching ``css`` once it is visible."""
        found = self.until(expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, css)), f"an element {css!r}", timeout)
        assert isinstance(found, WebElement)
        return found

    def clickable(self, css: str, timeout: float | None = None) -> WebElement:
        """The first element matching ``css`` once it can be clicked."""
        found = self.until(expected_conditions.element_to_be_clickable(
            (By.CSS_SELECTOR, css)), f"a clickable {css!r}", timeout)
        assert isinstance(found, WebElement)
        return found

    def text(self, css: str, expected: str, timeout: float | None = None) -> WebElement:
        """The first element matching ``css`` once its text contains ``expected``."""
        self.until(expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, css), expected), f"{expected!r} in {css!r}", timeout)
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def new_window(self, known: set[str], timeout: float | None = None) -> str:
        """Switch to the window that is not in ``known`` once it opens; its handle."""
        self.until(lambda driver: set(driver.window_handles) - known, "a new window", timeout)
        handle = next(iter(set(self.driver.window_handles) - known))
        self.driver.switch_to.window(handle)
        return handle


@contextmanager
def headless_chromium(timeout: float = WAIT_TIMEOUT) -> Iterator[Browser]:
    """A headless Chromium for the block (quit and its profile removed after).

    Raises :class:`fuzz.testing.oci.MissingPartError` when ``chromium`` or
    ``chromium-driver`` is not installed.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = require(CHROMIUM, "chromium")
    profile = Path(tempfile.mkdtemp(prefix="fuzz-chromium-"))
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = Service(executable_path=require(CHROMEDRIVER, "chromium-driver"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield Browser(driver, timeout)
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
