"""End to end: a real Jupyter notebook server as a service, used from a real browser
through the orchestrator's endpoint gateway only.

The image is Debian's ``jupyter-notebook`` (:mod:`fuzz.testing.jupyter_image`, no image
from the internet). ``fuzz workflow start examples/workflows/jupyter.fz`` starts it as a
service on a one-node local cluster; once ``fuzz workflow status`` says READY, its URL
comes from ``fuzz workflow endpoints --json``. Headless Chromium
(:mod:`fuzz.testing.browser`, trusting the gateway's certificate) opens it, is sent to
the gateway's sign-in page, signs in there with a login code typed into the form, lands
in the notebook list under the endpoint's prefix, creates a notebook from the New menu,
runs a cell (its kernel talks over Jupyter's WebSocket channels, relayed by the gateway)
and finds its result in the page; the saved file in the container holds it. Another
user is refused (403). The same cluster starts the catalog's ``jupyter`` application
(``fuzz app start``) to READY, and the web UI launches it from its form: the page shows
it READY without a reload, its endpoint link opens the notebook (the UI's sign-in is
the gateway's), and its Stop button ends it.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from fuzz.testing.browser import Browser, headless_chromium
from fuzz.testing.jupyter_image import JupyterLayout, jupyter_layout
from fuzz.testing.oci import PushedImage, free_port
from tests.support import webui
from tests.support.cliutil import run_fuzz
from tests.support.endpoints import Browser as Client
from tests.support.endpoints import ca_context
from tests.support.mpiimages import layer_paths
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import LocalCluster, dump, local_cluster, tasks_by_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "jupyter.fz"
CATALOG = Path(__file__).resolve().parents[2] / "catalog"
EXAMPLE_IMAGE = "docker://127.0.0.1:5000/fuzz/jupyter:latest"
SERVICE = "jupyter"
ENDPOINT = "jupyter"
PORT = 8888
CELL = "sum(range(10**6))"
RESULT = str(sum(range(10**6)))
READY_TIMEOUT = 240.0  # a cold Python start of the notebook server on a loaded machine
BROWSER_TIMEOUT = 120.0  # the notebook's page loads ~100 scripts through the gateway


def example_service() -> dict[str, Any]:
    """The example Fuzzfile's notebook service."""
    service: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["services"][SERVICE]
    return service


def wait_ready(cluster: LocalCluster, name: str) -> None:
    """Wait until ``name``'s notebook service is READY (status says why while not)."""
    def ready() -> bool:
        task = tasks_by_key(cluster.status(name))[SERVICE]
        assert task["state"] in ("WAITING", "QUEUED", "STARTING", "RUNNING"), dump(
            cluster.status(name))
        return bool(task.get("readiness") == "READY")

    wait_until(f"{name}'s notebook service READY", ready, timeout=READY_TIMEOUT)


@dataclass
class Notebook:
    """The running notebook workflow and its endpoint's URL on the gateway."""

    cluster: LocalCluster
    name: str
    url: str

    @property
    def gateway(self) -> tuple[str, int]:
        """The gateway's host and port."""
        parts = urllib.parse.urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port

    @property
    def path(self) -> str:
        """The endpoint's path prefix."""
        return urllib.parse.urlsplit(self.url).path

    def client(self) -> Client:
        """An HTTPS client of the gateway (no cookie yet), trusting the cluster CA."""
        return Client(*self.gateway, ca_context(self.cluster.data_dir / "ca.pem"))

    def certificate(self) -> str:
        """The gateway's certificate (PEM), for the browser to accept."""
        return ssl.get_server_certificate(self.gateway)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            jupyter_image: PushedImage) -> Iterator[LocalCluster]:
    """One node; the orchestrator serves ``catalog/`` as catalog ``fuzz``."""
    directory = tmp_path_factory.mktemp("jupyter")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [jupyter_image.registry.host], free_port(), nodes=1,
                       orchestrator={"catalogs": [{"name": "fuzz", "path": str(CATALOG)}]}
                       ) as running:
        yield running


@pytest.fixture(scope="module")
def notebook(cluster: LocalCluster, jupyter_image: PushedImage) -> Iterator[Notebook]:
    """The example's notebook service started, READY, and its endpoint's URL."""
    name = f"nb{os.getpid()}"  # a unique workflow name: runc ids are host-wide
    fuzzfile = cluster.directory / "jupyter.fz"
    fuzzfile.write_text(EXAMPLE.read_text().replace(EXAMPLE_IMAGE, jupyter_image.reference))
    cluster.ok("workflow", "start", name, str(fuzzfile))
    try:
        wait_ready(cluster, name)
        [listed] = cluster.ok("workflow", "endpoints", name, "--json").json()
        assert (listed["service"], listed["name"]) == (SERVICE, ENDPOINT), listed
        yield Notebook(cluster, name, str(listed["url"]))
    finally:  # stopped before the node goes, so that its container is cleaned up
        cluster.fuzz("workflow", "stop", name)
        cluster.wait(name)


def sign_in(browser: Browser, notebook: Notebook, credential: str) -> None:
    """Open the notebook's URL anonymously, be sent to the gateway's sign-in page, type
    ``credential`` into its form and land back under the endpoint's prefix."""
    browser.driver.get(notebook.url)
    browser.until(lambda page: urllib.parse.urlsplit(page.current_url).path
                  == "/_fuzz/sign-in", "the gateway's sign-in page")
    field = browser.clickable('input[name="credential"]')
    field.send_keys(credential)
    browser.clickable('button[type="submit"]').click()
    browser.until(lambda page: page.current_url.startswith(notebook.url),
                  "back under the endpoint's prefix")


def test_the_image_is_debians_notebook_and_nothing_recommended(
        jupyter_notebook_layout: JupyterLayout) -> None:
    paths = set(layer_paths(jupyter_notebook_layout.path))
    assert {"usr/bin/jupyter-notebook", "usr/share/jupyter/kernels/python3/kernel.json"} <= paths
    assert jupyter_notebook_layout.notebook_version.startswith("6.")
    recommended = [path for path in paths if "ipywidgets" in path or "usr/share/doc/" in path]
    assert recommended == []  # python3-notebook recommends python3-ipywidgets: not installed
    unneeded = {"usr/bin/gdb", "usr/sbin/convert-usrmerge", "usr/share/perl/5.36"} & paths
    assert unneeded == set()  # the debugger's gdb, usrmerge and its perl were purged
    again = jupyter_layout()
    assert not again.built_now and again.path == jupyter_notebook_layout.path


def test_the_example_validates_as_a_notebook_service_with_a_path_endpoint(
        tmp_path: Path) -> None:
    done = run_fuzz(tmp_path, "workflow", "validate", str(EXAMPLE), "--json")
    assert done.code == 0, done.err
    service = done.json()["plan"]["services"][0]
    assert service["name"] == SERVICE
    network = example_service()["network"]
    assert network["ports"] == [{"name": ENDPOINT, "port": PORT, "protocol": "tcp"}]
    assert [(e["name"], e["type"], e["scope"]) for e in network["endpoints"]] == [
        (ENDPOINT, "path", "user")]
    assert f"$FB_ENDPOINT_PATH_{ENDPOINT.upper()}" in example_service()["script"]


def test_the_endpoint_wants_a_sign_in_and_refuses_another_user(notebook: Notebook) -> None:
    assert notebook.url == (f"https://127.0.0.1:{notebook.gateway[1]}/endpoints/admin/"
                            f"{notebook.name}/{SERVICE}/{ENDPOINT}/")
    anonymous = notebook.client().request("GET", notebook.path + "api/status")
    assert anonymous.status == 302
    assert anonymous.headers["Location"].startswith("/_fuzz/sign-in?next=")
    token = (notebook.cluster.data_dir / "admin.token").read_text().strip()
    owner = notebook.client().request("GET", notebook.path + "api/status",
                                      headers={"Authorization": f"Bearer {token}"})
    assert owner.status == 200 and "kernels" in owner.json(), owner
    added = notebook.cluster.ok("iam", "user", "add", "mallory", "--role", "user",
                                "--json").json()
    other = notebook.client()
    assert other.sign_in(notebook.path, str(added["code"])).status == 303
    assert other.request("GET", notebook.path).status == 403
    assert other.request("GET", notebook.path + "api/status").status == 403


def test_a_browser_signs_in_creates_a_notebook_and_runs_a_cell(notebook: Notebook) -> None:
    code = notebook.cluster.ok("iam", "user", "code", "admin", "--json").json()["code"]
    with headless_chromium(timeout=BROWSER_TIMEOUT,
                           trusted=(notebook.certificate(),)) as browser:
        driver = browser.driver
        sign_in(browser, notebook, str(code))
        browser.loaded("#new-dropdown-button")
        known = set(driver.window_handles)
        browser.clickable("#new-dropdown-button").click()
        browser.clickable("#kernel-python3 a").click()
        browser.new_window(known)
        browser.until(lambda page: page.current_url.startswith(notebook.url + "notebooks/"),
                      "the new notebook's page under the prefix")
        browser.loaded("#kernel_indicator_icon.kernel_idle_icon")  # its kernel started
        browser.clickable(".cell .CodeMirror").click()
        editor = driver.switch_to.active_element
        editor.send_keys(CELL)
        editor.send_keys(Keys.SHIFT, Keys.ENTER)  # over the kernel's WebSocket channels
        output = browser.text(".cell .output_area .output_subarea", RESULT)
        assert output.text.strip() == RESULT
        assert "Out[1]" in browser.element(".cell .output_area .prompt").text
        opened = driver.current_url.removeprefix(notebook.url + "notebooks/").split("?")[0]
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()

        def saved() -> dict[str, Any]:
            """The notebook's file as the service's container holds it."""
            done = notebook.cluster.ok("workflow", "exec", notebook.name, SERVICE, "--",
                                       "cat", f"/tmp/jupyter/notebooks/{opened}")
            data: dict[str, Any] = json.loads(done.out)
            return data

        wait_until("the notebook saved with the cell's result", lambda: any(
            RESULT in json.dumps(cell.get("outputs")) for cell in saved()["cells"]), timeout=60)
    cell = saved()["cells"][0]
    assert "".join(cell["source"]) == CELL
    assert "".join(cell["outputs"][0]["data"]["text/plain"]) == RESULT
    assert saved()["metadata"]["kernelspec"]["name"] == "python3"


def test_the_catalogs_jupyter_application_starts_and_becomes_ready(
        cluster: LocalCluster, jupyter_image: PushedImage) -> None:
    name = f"app{os.getpid()}"
    cluster.ok("app", "start", "fuzz/jupyter", "--set", f"Image={jupyter_image.reference}",
               "--name", name)
    try:
        wait_ready(cluster, name)
        [listed] = cluster.ok("workflow", "endpoints", name, "--json").json()
        assert str(listed["url"]).endswith(f"/endpoints/admin/{name}/{SERVICE}/{ENDPOINT}/")
        assert listed["scope"] == "user"
    finally:
        cluster.fuzz("workflow", "stop", name)
        cluster.wait(name)


def test_the_ui_launches_jupyter_opens_its_endpoint_link_into_the_notebook_and_stops_it(
        cluster: LocalCluster, jupyter_image: PushedImage) -> None:
    name = f"ui{os.getpid()}"
    ui_url = str(json.loads((cluster.data_dir / "server.json").read_text())["ui_url"])
    ui = urllib.parse.urlsplit(ui_url)
    assert ui.hostname is not None and ui.port is not None
    trusted = ssl.get_server_certificate((ui.hostname, ui.port))  # the gateway's too

    def code() -> str:
        return str(cluster.ok("iam", "user", "code", "admin", "--json").json()["code"])

    with headless_chromium(timeout=READY_TIMEOUT, trusted=(trusted,)) as browser:
        driver = browser.driver
        webui.sign_in(browser, ui_url, "admin", code)
        try:
            for _ in range(5):  # a post Chromium dropped for a network change is sent again
                webui.open_page(browser, ui_url + "apps/fuzz/jupyter")
                for field, value in (("#workflow_name", name),
                                     ("#value-Image", jupyter_image.reference)):
                    browser.element(field).clear()
                    browser.element(field).send_keys(value)
                webui.submit(browser, "#launch")
                if not webui.dropped(browser):
                    break
                if cluster.fuzz("workflow", "status", name).code == 0:  # it got there
                    webui.open_page(browser, ui_url + f"workflows/admin.{name}.1")
                    break
            browser.text("h1", f"Workflow {name}")
            webui.mark_page(browser)
            browser.text(f'tr[data-task="{SERVICE}"]', "service READY")
            assert webui.same_page(browser), "READY came without reloading the page"
            href = webui.live(browser, "a.endpoint",
                              lambda link: str(link.get_attribute("href")))
            [listed] = cluster.ok("workflow", "endpoints", name, "--json").json()
            assert href == listed["url"], (href, listed)
            known = set(driver.window_handles)
            webui.live(browser, "a.endpoint", lambda link: link.click())  # a new tab
            browser.new_window(known)
            browser.loaded("#new-dropdown-button", timeout=BROWSER_TIMEOUT)  # no sign-in
            assert driver.current_url.startswith(href), driver.current_url
            assert driver.title == "Home Page - Select or create a notebook", driver.title
            driver.close()  # back to the UI's tab: its Stop ends the notebook service
            driver.switch_to.window(next(iter(known)))
            browser.clickable("#stop").click()
            browser.text("#workflow-state", "CANCELED")
            assert cluster.status(name)["state"] == "CANCELED"
        finally:
            cluster.fuzz("workflow", "stop", name)
            cluster.wait(name)
