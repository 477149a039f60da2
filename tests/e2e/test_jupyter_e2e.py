"""End to end: a real Jupyter notebook server in a real container, used from a real browser.

The image is Debian's ``jupyter-notebook`` (:mod:`fuzz.testing.jupyter_image`, no image
from the internet). The workflow is the notebook service of
``examples/workflows/jupyter.fz``, which Fuzzball's catalog would write; until services
land (issue 18, point 1) it runs as a JOB of a one-node local cluster, with
``$FB_ENDPOINT_PATH_JUPYTER`` (its base URL) set to the path the endpoint gateway will
give it (``/endpoints/<owner>/<workflow>/<service>/<endpoint>/``) and its token from a
fuzz secret (``JUPYTER_TOKEN=secret://user/…``): Jupyter's own check stays behind the
gateway's.

Reached through ``fuzz workflow port-forward``; headless Chromium
(:mod:`fuzz.testing.browser`) opens the notebook list under the prefix, creates a
notebook from the New menu, types a cell, runs it, finds its result in the page and
saves it; the saved file in the container holds the cell and its result.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from fuzz.testing.browser import headless_chromium
from fuzz.testing.jupyter_image import JupyterLayout, jupyter_layout
from fuzz.testing.oci import PushedImage, free_port
from tests.support.cliutil import run_fuzz
from tests.support.mpiimages import layer_paths
from tests.support.orchestratorutil import wait_until
from tests.support.portforward import Forward
from tests.support.workflowutil import LocalCluster, dump, local_cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "workflows" / "jupyter.fz"
JOB = "jupyter"
ENDPOINT = "jupyter"
PORT = 8888  # the example's port name "jupyter"; the job's own network namespace has it
CELL = "sum(range(10**6))"
RESULT = str(sum(range(10**6)))
START_TIMEOUT = 180.0  # a cold Python start of the notebook server on a loaded machine
BROWSER_TIMEOUT = 120.0  # the notebook's page loads ~100 scripts through port-forward
SERVICE_ONLY = ("network", "readiness-probe", "persist")


def example_service() -> dict[str, Any]:
    """The example Fuzzfile's notebook service."""
    service: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())["services"][JOB]
    return service


def example_as_job(image: str, prefix: str, secret: str) -> str:
    """The example's notebook service as a job (what runs until services land): its
    image ``image``, its token ``secret``, and ``$FB_ENDPOINT_PATH_JUPYTER`` = ``prefix``
    as the endpoint gateway will set it; the keys only a service has left out."""
    job = {key: value for key, value in example_service().items() if key not in SERVICE_ONLY}
    job["image"] = {"uri": image}
    job["env"] = [f"FB_ENDPOINT_PATH_{ENDPOINT.upper()}={prefix}", *[
        f"JUPYTER_TOKEN=secret://user/{secret}" if entry.startswith("JUPYTER_TOKEN=")
        else entry for entry in job["env"]]]
    return yaml.safe_dump({"version": "v4", "jobs": {JOB: job}}, sort_keys=False)


@dataclass
class Notebook:
    """The running workflow, its Jupyter's base URL prefix and token, and the forward."""

    cluster: LocalCluster
    name: str
    prefix: str
    token: str
    forward: Forward

    def url(self, path: str = "") -> str:
        """``path`` under the server's prefix, on the forwarded local port."""
        return f"http://127.0.0.1:{self.forward.port}{self.prefix}{path}"


def get(url: str) -> int:
    """The HTTP status of GET ``url`` (no redirects followed)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def answers(url: str) -> bool:
    """Whether GET ``url`` is a 200; False while nothing listens behind the forward yet
    (the port-forward then closes the connection) or Jupyter still starts."""
    try:
        return get(url) == 200
    except OSError:  # refused, reset or closed before an answer
        return False


@pytest.fixture(scope="module")
def notebook(tmp_path_factory: pytest.TempPathFactory,
             jupyter_image: PushedImage) -> Iterator[Notebook]:
    """One node running the notebook job, port-forwarded once Jupyter answers its API."""
    directory = tmp_path_factory.mktemp("jupyter")
    os.chmod(directory, 0o755)
    with local_cluster(directory, [jupyter_image.registry.host], free_port(),
                       nodes=1) as cluster:
        name = f"nb{os.getpid()}"  # a unique workflow name: runc ids are host-wide
        owner = cluster.ok("whoami", "--json").json()["user"]
        prefix = f"/endpoints/{owner}/{name}/{JOB}/{ENDPOINT}/"
        token, secret = secrets.token_hex(24), f"jupyter-token-{os.getpid()}"
        made = cluster.fuzz("secret", "create", secret, "--from-literal", stdin=token)
        assert made.code == 0, made.err
        cluster.start(name, example_as_job(jupyter_image.reference, prefix, secret))
        try:
            cluster.wait_for(name, JOB, "RUNNING", timeout=START_TIMEOUT)
            forward = Forward(cluster, name, JOB, PORT)
            running = Notebook(cluster, name, prefix, token, forward)
            try:
                deadline = time.monotonic() + START_TIMEOUT  # a poll a second: each one
                while not answers(running.url(f"api/status?token={token}")):  # a new stream
                    assert time.monotonic() < deadline, dump(cluster.status(name))
                    time.sleep(1)
                yield running
            finally:
                forward.stop()
        finally:  # stopped before the node goes, so that its container is cleaned up
            cluster.fuzz("workflow", "cancel", name)
            cluster.wait(name)


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
    assert service["name"] == JOB
    network = example_service()["network"]
    assert network["ports"] == [{"name": ENDPOINT, "port": PORT, "protocol": "tcp"}]
    assert [(e["name"], e["type"]) for e in network["endpoints"]] == [(ENDPOINT, "path")]
    assert f"$FB_ENDPOINT_PATH_{ENDPOINT.upper()}" in example_service()["script"]


def test_jupyter_serves_under_the_endpoint_prefix_and_wants_its_token(
        notebook: Notebook) -> None:
    assert get(notebook.url("api/status")) == 403  # no token: Jupyter refuses
    assert get(notebook.url(f"api/status?token={notebook.token}")) == 200
    outside = f"http://127.0.0.1:{notebook.forward.port}/api/status?token={notebook.token}"
    assert get(outside) == 404  # nothing outside the prefix
    probe = example_service()["readiness-probe"]["exec"]["command"]
    ran = notebook.cluster.fuzz("workflow", "exec", notebook.name, JOB, "--", *probe)
    assert ran.code == 0, ran.err  # the example's readiness probe passes in the job


def test_a_browser_creates_a_notebook_and_runs_a_cell(notebook: Notebook) -> None:
    with headless_chromium(timeout=BROWSER_TIMEOUT) as browser:
        driver = browser.driver
        driver.get(notebook.url(f"tree?token={notebook.token}"))
        browser.loaded("#new-dropdown-button")
        known = set(driver.window_handles)
        browser.clickable("#new-dropdown-button").click()
        browser.clickable("#kernel-python3 a").click()
        browser.new_window(known)
        browser.until(lambda page: page.current_url.startswith(notebook.url("notebooks/")),
                      "the new notebook's page under the prefix")
        browser.loaded("#kernel_indicator_icon.kernel_idle_icon")  # its kernel started
        browser.clickable(".cell .CodeMirror").click()
        editor = driver.switch_to.active_element
        editor.send_keys(CELL)
        editor.send_keys(Keys.SHIFT, Keys.ENTER)
        output = browser.text(".cell .output_area .output_subarea", RESULT)
        assert output.text.strip() == RESULT
        assert "Out[1]" in browser.element(".cell .output_area .prompt").text
        opened = driver.current_url.removeprefix(notebook.url("notebooks/")).split("?")[0]
        ActionChains(driver).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()

        def saved() -> dict[str, Any]:
            """The notebook's file as the job's container holds it (fuzz workflow exec)."""
            done = notebook.cluster.ok("workflow", "exec", notebook.name, JOB, "--", "cat",
                                       f"/tmp/jupyter/notebooks/{opened}")
            data: dict[str, Any] = json.loads(done.out)
            return data

        wait_until("the notebook saved with the cell's result", lambda: any(
            RESULT in json.dumps(cell.get("outputs")) for cell in saved()["cells"]), timeout=60)
    cell = saved()["cells"][0]
    assert "".join(cell["source"]) == CELL
    assert "".join(cell["outputs"][0]["data"]["text/plain"]) == RESULT
    assert saved()["metadata"]["kernelspec"]["name"] == "python3"
