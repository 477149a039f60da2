"""A real headless browser for tests: Debian's Chromium driven by Selenium.

:func:`headless_chromium` starts Debian's ``chromium`` through its ``chromedriver``
(packages ``chromium`` and ``chromium-driver``; Selenium is told both paths, so its
Selenium Manager never downloads a browser or a driver) and yields a :class:`Browser`:
the WebDriver plus waits on a condition (an element, its text, a new window) instead
of sleeps; :meth:`Browser.loaded` reloads a page whose loading a change of the host's
network aborted.

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
- ``--ignore-certificate-errors-spki-list=HASH``, only when the test names a server's
  certificate (``trusted``): the endpoint gateway's, issued by the test cluster's own CA.
  Chromium then accepts that one key and no other bad certificate; the profile keeps no
  trust store to add the CA to (Chromium reads the user's NSS database, which a test
  must not change).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from fuzz.testing.oci import require

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_TIMEOUT = 60.0
RELOADS = 3
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"
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
    console: list[str] = field(default_factory=list)
    """The console's errors so far (read by :meth:`read_console`)."""

    def read_console(self) -> list[str]:
        """Add the console's new errors to :attr:`console`; returns them all."""
        logged = self.driver.get_log("browser")  # type: ignore[no-untyped-call]  # selenium's
        self.console += [entry["message"] for entry in logged if entry["level"] == "SEVERE"]
        return self.console

    def until(self, condition: Callable[[webdriver.Chrome], object], what: str,
              timeout: float | None = None) -> object:
        """Wait until ``condition(driver)`` is truthy and return it; BrowserWaitError
        naming ``what`` (with the page's address and title) when it does not come."""
        try:
            return WebDriverWait(self.driver, timeout or self.timeout).until(condition)
        except TimeoutException:
            raise BrowserWaitError(
                f"{what}: not there after {timeout or self.timeout:.0f} s on "
                f"{self.driver.current_url} ({self.driver.title!r}); the page shows: "
                f"{self._shown()}") from None

    def _shown(self, limit: int = 500) -> str:
        """The start of the page's visible text and the console's last errors, for
        failure messages."""
        try:
            text = str(self.driver.find_element(By.TAG_NAME, "body").text)[:limit]
            errors = self.read_console()
        except WebDriverException as error:
            return f"(unreadable: {error.msg})"
        return repr(text) + (f"; console errors: {errors[-5:]}" if errors else "")

    def element(self, css: str, timeout: float | None = None) -> WebElement:
        """The first element matching ``css`` once it is visible."""
        found = self.until(expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, css)), f"an element {css!r}", timeout)
        assert isinstance(found, WebElement)
        return found

    def loaded(self, css: str, timeout: float | None = None,
               reloads: int = RELOADS) -> WebElement:
        """The first element matching ``css`` once visible, reloading the page (up to
        ``reloads`` times) when a network change aborted its loading.

        Chromium watches the host's interfaces and addresses (netlink) and aborts every
        request in flight with ``net::ERR_NETWORK_CHANGED`` when one changes, even one
        to 127.0.0.1; on a machine where fuzz makes job network namespaces (veths, a
        bridge) that happens, and a page whose scripts were aborted never shows.
        """
        visible = expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
        for _ in range(reloads + 1):
            found = self._unless_aborted(visible, f"the page with {css!r}", timeout)
            if isinstance(found, WebElement):
                return found
            self.driver.refresh()
        raise BrowserWaitError(f"the page with {css!r}: a network change aborted its loading "
                               f"{reloads + 1} times on {self.driver.current_url}")

    def text_after(self, action: Callable[[], None], css: str, expected: str,
                   timeout: float | None = None, retries: int = RELOADS) -> WebElement:
        """Do ``action`` (an input the page answers by a request) and return the first
        element matching ``css`` once its text contains ``expected``; the action is done
        again (up to ``retries`` times) when a network change aborted a request meanwhile
        (see :meth:`loaded`)."""
        present = expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, css), expected)
        what = f"{expected!r} in {css!r}"
        for _ in range(retries + 1):
            seen = len(self.read_console())
            action()
            if self._unless_aborted(present, what, timeout, seen) is not None:
                return self.element(css)
        raise BrowserWaitError(f"{what}: a network change aborted the page's request "
                               f"{retries + 1} times on {self.driver.current_url}")

    def _unless_aborted(self, condition: Callable[[webdriver.Chrome], object], what: str,
                        timeout: float | None, seen: int | None = None) -> object | None:
        """What ``condition`` returns once truthy, or None once the console (past its
        first ``seen`` messages; None: as it is now) says a network change aborted a
        request."""
        start = len(self.read_console()) if seen is None else seen

        def met_or_aborted(driver: webdriver.Chrome) -> object:
            return condition(driver) or any(
                NETWORK_CHANGED in message for message in self.read_console()[start:])

        found = self.until(met_or_aborted, what, timeout)
        met = condition(self.driver) if found is True else found
        return met or None

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


def spki_hash(certificate_pem: str) -> str:
    """The base64 SHA-256 of ``certificate_pem``'s public key (SubjectPublicKeyInfo), as
    Chromium's ``--ignore-certificate-errors-spki-list`` takes it."""
    key = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextmanager
def headless_chromium(timeout: float = WAIT_TIMEOUT,
                      trusted: tuple[str, ...] = ()) -> Iterator[Browser]:
    """A headless Chromium for the block (quit and its profile removed after); it accepts
    the servers' certificates ``trusted`` (PEM) whatever issued them.

    Raises :class:`fuzz.testing.oci.MissingPartError` when ``chromium`` or
    ``chromium-driver`` is not installed.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = require(CHROMIUM, "chromium")
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})  # for failures
    profile = Path(tempfile.mkdtemp(prefix="fuzz-chromium-"))
    accepted = [f"--ignore-certificate-errors-spki-list={','.join(map(spki_hash, trusted))}"
                ] if trusted else []
    for flag in (*FLAGS, f"--user-data-dir={profile}", *accepted):
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
