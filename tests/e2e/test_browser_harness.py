"""The headless browser of the web tests (:mod:`fuzz.testing.browser`): Debian's Chromium,
as root, waits on what a page's script makes, and reaches nothing but 127.0.0.1."""

from __future__ import annotations

import http.server
from collections.abc import Iterator

import pytest
from selenium.common.exceptions import WebDriverException

from fuzz.testing.browser import Browser, BrowserWaitError, headless_chromium
from fuzz.testing.web import serve_handler

PAGE = b"""<!doctype html><html><head><title>harness</title></head><body>
<button id="go" onclick="setTimeout(function () {
  var p = document.createElement('p'); p.id = 'late'; p.textContent = 'made ' + (6 * 7);
  document.body.appendChild(p);
  setTimeout(function () { p.textContent = 'done 42'; }, 700);
}, 700)">go</button>
<a id="open" href="/other" target="_blank">open</a>
</body></html>"""


class Pages(http.server.BaseHTTPRequestHandler):
    """The page above at every path."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The page's base URL on 127.0.0.1."""
    with serve_handler(Pages) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with headless_chromium(timeout=30) as running:
        yield running


def test_the_browser_runs_the_pages_script_and_waits_for_what_it_makes(
        site: str, browser: Browser) -> None:
    browser.driver.get(f"{site}/")
    assert browser.driver.title == "harness"
    browser.clickable("#go").click()
    assert browser.element("#late").text.startswith("made")
    assert browser.text("#late", "done 42").text == "done 42"


def test_a_wait_that_never_comes_says_what_it_waited_for(site: str, browser: Browser) -> None:
    browser.driver.get(f"{site}/")
    with pytest.raises(BrowserWaitError, match=r"an element '#never': not there after 1 s on "
                       r"http://127\.0\.0\.1:\d+/ \('harness'\)"):
        browser.element("#never", timeout=1)


def test_a_link_that_opens_a_window_is_followed(site: str, browser: Browser) -> None:
    browser.driver.get(f"{site}/")
    known = set(browser.driver.window_handles)
    browser.clickable("#open").click()
    browser.new_window(known)
    browser.until(lambda driver: driver.current_url == f"{site}/other", "the other page")
    browser.driver.close()
    browser.driver.switch_to.window(next(iter(known)))


def test_no_name_resolves_but_localhost(site: str, browser: Browser) -> None:
    port = site.rpartition(":")[2]
    browser.driver.get(f"http://localhost:{port}/")  # EXCLUDEd from the rule: resolves
    assert browser.driver.title == "harness"
    # any other name is NOTFOUND inside the browser, without a DNS query leaving the host
    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
        browser.driver.get("http://deb.debian.org/")
