"""Helpers for tests that drive the web UI in headless Chromium
(:mod:`fuzz.testing.browser`): loads and form posts tried again when Chromium dropped
them for a change of the host's network, reads of the page's live parts tried again
when a server-sent update replaced them, and the UI's sign-in."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of

from fuzz.testing.browser import Browser

T = TypeVar("T")
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"
"""Chromium drops a page load when the host's interfaces change (the agents' job networks,
other tests' namespaces come and go): such a load is tried again."""
TRIES = 5


def open_page(browser: Browser, url: str) -> None:
    """Load ``url``, again when Chromium dropped it for a network change."""
    for _ in range(TRIES):
        browser.driver.get(url)
        if NETWORK_CHANGED not in browser.driver.page_source:
            return
    raise AssertionError(f"{url}: {NETWORK_CHANGED} {TRIES} times")


def dropped(browser: Browser) -> bool:
    """Whether Chromium dropped the page's last load for a network change."""
    return NETWORK_CHANGED in browser.driver.page_source


def submit(browser: Browser, css: str) -> None:
    """Click the button ``css`` and wait for the answer; the form is filled again by the
    caller when Chromium dropped the post for a network change (see :func:`dropped`).

    The answer is a new document (the forms post without scripts): the one that had the
    button must be gone first, or the old page's ``complete`` would be taken for it and
    a post dropped after that would go unseen."""
    page = browser.driver.find_element(By.TAG_NAME, "html")
    browser.clickable(css).click()
    browser.until(staleness_of(page), "the form's page to be left")
    browser.until(lambda driver: driver.execute_script("return document.readyState")
                  == "complete", "the answer to the form")


def again(read: Callable[[], T]) -> T:
    """``read()`` of a live part of the page, again when an update replaced what it
    had found."""
    for _ in range(20):
        try:
            return read()
        except StaleElementReferenceException:
            continue
    raise AssertionError("the page's live part was replaced twenty times in a row")


def live(browser: Browser, css: str, act: Callable[[WebElement], T]) -> T:
    """``act`` on the element ``css`` of a live part of the page (see :func:`again`)."""
    return again(lambda: act(browser.element(css)))


def sign_in(browser: Browser, ui_url: str, user: str, code: Callable[[], str]) -> None:
    """Sign in to the UI at ``ui_url`` as ``user`` with a fresh login code from ``code()``
    (a code is spent even when the answer was dropped: each try takes a new one)."""
    for _ in range(TRIES):
        open_page(browser, ui_url)
        browser.element("#credential").send_keys(code(), Keys.ENTER)
        browser.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#signed-in-as")
                      or NETWORK_CHANGED in driver.page_source, "signed in")
        if not dropped(browser):
            break
    browser.text("#signed-in-as", user)


def mark_page(browser: Browser) -> None:
    """Mark the page's window, so that :func:`same_page` tells whether it was reloaded."""
    browser.driver.execute_script("window.fuzzTestMark = 'same page';")


def same_page(browser: Browser) -> bool:
    """Whether the page is still the one :func:`mark_page` marked (no reload since)."""
    return bool(browser.driver.execute_script("return window.fuzzTestMark") == "same page")
