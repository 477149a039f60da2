"""End to end: the web UI in a real headless Chromium (Debian's, through Selenium) on a
local cluster (real orchestrator, agents, runc containers, registry).

Two users, alice and bob, sign in with login codes. Alice launches the parameter sweep
from its form with changed values and watches its task array succeed without a reload,
sees the CLI's message for a bad value, starts workflows from the Fuzzfile editor
(after it showed a typo at its line), follows a job's log, cancels a workflow, stops
one whose service persists (it ends as ``fuzz workflow stop`` ends its twin) and
opens a service's endpoint link (the gateway takes the UI's sign-in). Bob never sees
alice's workflows. The screenshots of docs/ui.md are taken here (docs/ui/*.png).
"""

from __future__ import annotations

import http.client
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from fuzz.testing.browser import Browser, headless_chromium
from fuzz.testing.oci import PushedImage, Registry, free_port
from tests.support.endpoints import ca_context
from tests.support.webui import (
    again,
    dropped,
    live,
    mark_page,
    open_page,
    same_page,
    sign_in,
    submit,
)
from tests.support.workflowutil import LocalCluster, local_cluster

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "catalog"
SHOTS = ROOT / "docs" / "ui"
"""Where the screenshots go with FUZZ_UI_SCREENSHOTS=1 (to update docs/ui.md's);
otherwise into the test's temporary directory, so a test run leaves the checkout as it was."""
LIVE = 180.0  # seconds a workflow may take to reach a state on a loaded machine

TALKER = """\
version: v1
jobs:
  talk:
    image: {{uri: {image}}}
    script: |
      for i in 1 2 3 4 5 6; do echo "line $i"; sleep 1; done
      echo "all said"
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""
SLEEPER = """\
version: v1
jobs:
  nap:
    image: {{uri: {image}}}
    script: sleep 600
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""
TYPO = """\
version: v1
jobs:
  hello:
    image: {{uri: {image}}}
    scirpt: echo hello
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""
WEB = """\
version: v1
services:
  web:
    image: {{uri: {image}}}
    persist: true
    script: |
      mkdir -p "/tmp/www$FB_ENDPOINT_PATH_PAGE"
      echo 'served to the UI user' > "/tmp/www$FB_ENDPOINT_PATH_PAGE/index.html"
      exec httpd -f -p 8080 -h /tmp/www
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
    network:
      ports:
        - {{name: http, port: 8080}}
      endpoints:
        - {{name: page, port-name: http, type: path, scope: user}}
    readiness-probe:
      tcp-socket: {{port: 8080}}
      period-seconds: 1
"""
KEPT = """\
version: v1
jobs:
  quick:
    image: {{uri: {image}}}
    script: echo done
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
services:
  keeper:
    image: {{uri: {image}}}
    persist: true
    script: exec sleep 600
    resource: {{cpu: {{cores: 1}}, memory: {{size: 64MiB}}}}
"""
FINISHED = ("SUCCEEDED", "FAILED", "CANCELED")


@dataclass
class Site:
    """The cluster, where its web UI is, and the users' login codes."""

    cluster: LocalCluster
    url: str
    image: str

    def code(self, user: str) -> str:
        """A fresh one-time login code for ``user`` (added on first use)."""
        added = self.cluster.fuzz("iam", "user", "add", user, "--role", "user", "--json")
        if added.code == 0:
            return str(added.json()["code"])
        return str(self.cluster.ok("iam", "user", "code", user, "--json").json()["code"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, registry: Registry,
         busybox_image: PushedImage) -> Iterator[Site]:
    """Two local nodes; the orchestrator serves ``catalog/`` and the web UI."""
    directory = tmp_path_factory.mktemp("web-ui")
    os.chmod(directory, 0o755)
    orchestrator = {"catalogs": [{"name": "fuzz", "path": str(CATALOG)}]}
    with local_cluster(directory, [registry.host], free_port(),
                       orchestrator=orchestrator) as cluster:
        info = json.loads((cluster.data_dir / "server.json").read_text())
        yield Site(cluster, str(info["ui_url"]), busybox_image.reference)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    """One headless Chromium for the module, alice signed in. It does not know the
    test cluster's CA:
    certificate errors are waived through DevTools (the UI's certificate is checked
    against the CA by :func:`test_the_ui_serves_https_with_the_clusters_certificate`)."""
    with headless_chromium(timeout=LIVE) as running:
        running.driver.set_window_size(1280, 800)
        running.driver.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": True})
        _sign_in(running, site, "alice")
        yield running


def _shot(browser: Browser, name: str) -> None:
    """A screenshot of the page, checked to be a PNG; into docs/ui/ when asked for."""
    shots = SHOTS if os.environ.get("FUZZ_UI_SCREENSHOTS") == "1" else Path(
        tempfile.gettempdir()) / "fuzz-ui-screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    assert browser.driver.save_screenshot(str(shots / f"{name}.png"))
    assert (shots / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def _sign_in(browser: Browser, site: Site, user: str) -> None:
    sign_in(browser, site.url, user, lambda: site.code(user))


def _editor_start(browser: Browser, site: Site, name: str, text: str) -> None:
    for _ in range(5):
        open_page(browser, site.url + "editor")
        browser.text_after(lambda: _type_fuzzfile(browser, text),
                           "#problems", "The Fuzzfile is valid.")
        browser.element("#name").send_keys(name)
        submit(browser, "#start")
        if not dropped(browser):
            break
    browser.text("h1", f"Workflow {name}")


def _type_fuzzfile(browser: Browser, text: str) -> None:
    area = browser.element("#fuzzfile")
    area.send_keys(Keys.CONTROL, "a")
    area.send_keys(Keys.DELETE)
    # the text as if pasted: one input event (typing it key by key adds nothing here)
    browser.driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", area, text)


def test_the_ui_serves_https_with_the_clusters_certificate(site: Site) -> None:
    split = urlsplit(site.url)
    connection = http.client.HTTPSConnection(
        split.hostname or "", split.port, timeout=60,
        context=ca_context(site.cluster.data_dir / "ca.pem"))
    connection.request("GET", "/ui/")
    answer = connection.getresponse()
    assert answer.status == 303 and answer.getheader("location", "").startswith(
        "/ui/sign-in?next=")


def test_pages_and_event_streams_want_a_sign_in_and_posts_their_own_origin(
        site: Site) -> None:
    split = urlsplit(site.url)
    connection = http.client.HTTPSConnection(
        split.hostname or "", split.port, timeout=60,
        context=ca_context(site.cluster.data_dir / "ca.pem"))
    for path in ("/ui/workflows/events", "/ui/editor", "/ui/apps/fuzz/parameter_sweep"):
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 303, (path, answer.status)
    connection.request("POST", "/ui/sign-in", body=b"credential=x", headers={
        "Origin": "https://elsewhere.example", "Content-Type":
        "application/x-www-form-urlencoded"})
    answer = connection.getresponse()
    assert answer.status == 403 and b"cross-origin" in answer.read()


def test_sign_in_shows_the_catalog_by_category(site: Site, browser: Browser) -> None:
    open_page(browser, site.url)
    browser.clickable("nav button").click()  # sign out
    browser.element("#credential").send_keys("fuzzcode-not-a-real-one", Keys.ENTER)
    assert browser.element("#sign-in-problem").text
    _sign_in(browser, site, "alice")
    headings = [h.text for h in browser.driver.find_elements(By.CSS_SELECTOR, "main h2")]
    assert len(headings) >= 2 and headings == sorted(headings), headings
    card = browser.element('[data-app="fuzz/parameter_sweep"]')
    assert card.find_element(By.CSS_SELECTOR, "h3 a").text
    _shot(browser, "catalog")


def test_the_keyboard_reaches_an_application_and_its_form(site: Site,
                                                          browser: Browser) -> None:
    open_page(browser, site.url)
    target = "/ui/apps/fuzz/parameter_sweep"
    for _ in range(60):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        active = browser.driver.switch_to.active_element
        if str(active.get_attribute("href")).endswith(target):
            break
    else:
        raise AssertionError("Tab never reached the parameter sweep's card")
    active.send_keys(Keys.ENTER)
    browser.element("#workflow_name").click()
    ActionChains(browser.driver).send_keys(Keys.TAB).perform()
    assert browser.driver.switch_to.active_element.get_attribute("id") == "value-Image"


def test_a_bad_value_shows_the_clis_message(site: Site, browser: Browser) -> None:
    open_page(browser, site.url + "apps/fuzz/parameter_sweep")
    labels = browser.driver.find_elements(By.CSS_SELECTOR, "form#app-form label")
    for field in browser.driver.find_elements(By.CSS_SELECTOR, "form#app-form input, "
                                              "form#app-form select"):
        assert any(label.get_attribute("for") == field.get_attribute("id")
                   for label in labels), f"no label for {field.get_attribute('name')}"
    last = browser.element("#value-Last")
    last.clear()
    last.send_keys("x")
    shown = browser.text("#problem-Last", "--set Last=x: ").text
    cli = site.cluster.fuzz("app", "start", "fuzz/parameter_sweep", "--set", "Last=x")
    assert cli.code == 1 and shown in cli.err, (shown, cli.err)
    _shot(browser, "form")
    for _ in range(5):  # a post Chromium dropped for a network change is sent again
        submit(browser, "#launch")
        if not dropped(browser):
            break
        browser.driver.back()
    assert shown in browser.element("#form-problem").text
    assert browser.element("#value-Last").get_attribute("aria-invalid") == "true"


def test_the_sweep_launched_from_its_form_succeeds_live(site: Site, browser: Browser) -> None:
    for _ in range(5):
        open_page(browser, site.url + "apps/fuzz/parameter_sweep")
        for name, value in (("Image", site.image), ("Last", "3")):
            field = browser.element(f"#value-{name}")
            field.clear()
            field.send_keys(value)
        submit(browser, "#launch")
        if not dropped(browser):
            break
        if site.cluster.fuzz("workflow", "status", "alice/parameter-sweep").code == 0:
            open_page(browser, site.url + "workflows/alice.parameter-sweep.1")  # it got there
            break
    problem = browser.driver.find_elements(By.CSS_SELECTOR, "#form-problem")
    assert not problem, problem[0].text
    browser.text("h1", "Workflow parameter-sweep")
    mark_page(browser)
    keys = again(lambda: sorted(
        str(row.get_attribute("data-task"))
        for row in browser.driver.find_elements(By.CSS_SELECTOR, "tr[data-task]")))
    assert keys == ["collect", "sweep[1]", "sweep[2]", "sweep[3]"], keys
    assert browser.element("svg.dag")
    _shot(browser, "running-workflow")
    browser.text("#workflow-state", "SUCCEEDED")
    assert same_page(browser), "the status came without reloading the page"
    states = again(lambda: {
        row.get_attribute("data-task"): row.find_element(By.CSS_SELECTOR, ".state").text
        for row in browser.driver.find_elements(By.CSS_SELECTOR, "tr[data-task]")})
    assert len(states) == 4 and all(s.startswith("SUCCEEDED") for s in states.values()), states
    assert again(lambda: {job.get_attribute("data-state") for job in
                           browser.driver.find_elements(By.CSS_SELECTOR, "svg.dag g.dag-job")}
                  ) == {"SUCCEEDED"}


def test_the_editor_shows_a_typo_at_its_line(site: Site, browser: Browser) -> None:
    open_page(browser, site.url + "editor")
    typo = TYPO.format(image=site.image)
    problem = browser.text_after(lambda: _type_fuzzfile(browser, typo),
                                 "#problems", "Fuzzfile:5:").text
    assert "scirpt" in problem, problem
    browser.text_after(lambda: _type_fuzzfile(browser, typo.replace("scirpt", "script")),
                       "#problems", "The Fuzzfile is valid.")


def test_a_jobs_log_is_followed_live(site: Site, browser: Browser) -> None:
    _editor_start(browser, site, "talker", TALKER.format(image=site.image))
    live(browser, 'tr[data-task="talk"] a', lambda link: link.click())
    browser.text("#log", "line 1")
    mark_page(browser)
    browser.text("#log", "all said")
    assert same_page(browser)
    assert browser.element("#log").text.splitlines() == \
        [f"line {i}" for i in range(1, 7)] + ["all said"]
    _shot(browser, "logs")


def test_a_workflow_is_canceled_from_its_page(site: Site, browser: Browser) -> None:
    _editor_start(browser, site, "sleeper", SLEEPER.format(image=site.image))
    browser.text('tr[data-task="nap"] .state', "RUNNING")
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#stop") == []  # no service to stop
    browser.clickable("#cancel").click()
    browser.text("#workflow-state", "CANCELED")
    assert site.cluster.status("alice/sleeper")["state"] == "CANCELED"


def _ended(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """How a workflow ended: its state and error (under ``""``), and each task's state
    and error by key."""
    return {"": (status["state"], status.get("error", "")), **{
        task["key"]: (task["state"], task.get("error", "")) for task in status["tasks"]}}


def _post_as(site: Site, user: str, path: str) -> tuple[int, str]:
    """Sign in to the UI as ``user`` over plain HTTPS (no browser) and POST ``path``;
    the answer's status and text."""
    split = urlsplit(site.url)
    connection = http.client.HTTPSConnection(
        split.hostname or "", split.port, timeout=60,
        context=ca_context(site.cluster.data_dir / "ca.pem"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    connection.request("POST", "/ui/sign-in", body=f"credential={site.code(user)}",
                       headers=form)
    signed = connection.getresponse()
    signed.read()
    assert signed.status == 303, signed.status
    cookie = str(signed.getheader("set-cookie")).split(";")[0]
    connection.request("POST", path, body=b"", headers={**form, "Cookie": cookie})
    answer = connection.getresponse()
    return answer.status, answer.read().decode()


def _press_by_keyboard(browser: Browser, button: str) -> None:
    """Tab to the button of id ``button``, press Enter, and wait for the answer's page."""
    for _ in range(60):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        if browser.driver.switch_to.active_element.get_attribute("id") == button:
            break
    else:
        raise AssertionError(f"Tab never reached #{button}")
    mark_page(browser)
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    browser.until(lambda driver: not same_page(browser) and driver.execute_script(
        "return document.readyState") == "complete", f"the answer to #{button}")


def test_a_persistent_service_is_stopped_from_its_page_as_the_cli_stops_it(
        site: Site, browser: Browser) -> None:
    fuzzfile = KEPT.format(image=site.image)
    site.cluster.start("kept-by-cli", fuzzfile)
    try:
        _editor_start(browser, site, "kept", fuzzfile)
        browser.text('tr[data-task="quick"] .state', "SUCCEEDED")
        browser.text('tr[data-task="keeper"]', "service READY")
        assert browser.element("#workflow-state").text == "RUNNING"  # its service persists
        assert browser.driver.find_elements(By.CSS_SELECTOR, "#cancel") == []
        stop = browser.element("#stop")
        assert stop.text == "Stop this workflow"
        described = browser.element(f'#{stop.get_attribute("aria-describedby")}').text
        assert "fuzz workflow stop" in described, described
        browser.driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        _shot(browser, "stop")
        # the UI stops with the user's own token: another user is refused, as by the API
        status, text = _post_as(site, "bob", "/ui/workflows/alice.kept.1/stop")
        assert status in (400, 404) and "Not stopped" in text, (status, text)
        assert site.cluster.status("alice/kept")["state"] == "RUNNING"
        site.cluster.wait_for("kept-by-cli", "quick", "SUCCEEDED", timeout=LIVE)
        site.cluster.wait_for("kept-by-cli", "keeper", "RUNNING", timeout=LIVE)
        page = browser.driver.current_url
        site.cluster.ok("workflow", "stop", "kept-by-cli")  # both stop at once
        for _ in range(5):  # again when Chromium dropped the post for a network change
            _press_by_keyboard(browser, "stop")
            if not dropped(browser):
                break
            open_page(browser, page)
        browser.until(lambda driver: again(lambda: driver.find_element(
            By.CSS_SELECTOR, "#workflow-state").text in FINISHED), "the workflow ended")
        by_cli = _ended(site.cluster.wait("kept-by-cli", timeout=LIVE))
        by_ui = _ended(site.cluster.wait("alice/kept", timeout=LIVE))
        assert by_ui == by_cli, (by_ui, by_cli)
        assert by_ui["keeper"][0] == "CANCELED", by_ui
        shown = again(lambda: browser.element('tr[data-task="keeper"] .state').text)
        assert shown.startswith("CANCELED"), shown
        assert browser.element("#workflow-state").text == by_ui[""][0]
    finally:  # ended before the nodes go, so that their containers are cleaned up
        for name in ("kept-by-cli", "alice/kept"):
            site.cluster.fuzz("workflow", "stop", name)
            site.cluster.wait(name, timeout=LIVE)


def test_a_services_endpoint_link_opens_it_with_the_same_sign_in(
        site: Site, browser: Browser) -> None:
    _editor_start(browser, site, "web", WEB.format(image=site.image))
    href = live(browser, "a.endpoint", lambda link: str(link.get_attribute("href")))
    assert "/endpoints/alice/web/web/page/" in href, href
    browser.text('tr[data-task="web"] .state', "RUNNING")
    browser.text("#endpoints", "web/page")
    open_page(browser, href)  # the gateway's port: the UI's cookie is the gateway's too
    browser.text("body", "served to the UI user")
    open_page(browser, site.url + "workflows")
    live(browser, 'tr[data-workflow="web"] a', lambda link: link.click())
    browser.clickable("#stop").click()  # its service persists
    browser.text("#workflow-state", "CANCELED")


def test_a_user_never_sees_another_users_workflow(site: Site, browser: Browser) -> None:
    open_page(browser, site.url + "workflows")
    alice_run = live(browser, 'tr[data-workflow="talker"] a',
                      lambda link: str(link.get_attribute("href")))
    browser.clickable("nav button").click()  # sign out
    _sign_in(browser, site, "bob")
    open_page(browser, site.url + "workflows")
    browser.element("#workflow-rows")
    assert browser.driver.find_elements(By.CSS_SELECTOR, "tr[data-workflow]") == []
    open_page(browser, alice_run)
    assert "talker" not in browser.element("main").text.split("Refused")[0]
    assert browser.element("h1").text == "Refused"
