"""`make demo`: a local cluster, its orchestrator, and the sample pipeline in real containers.

What it does, each step a real `fuzz` command printed before it runs:

1. writes this checkout's demo cluster into ``.demo/`` (``$DEMO_DIR``): examples/local's
   spec and the example workflows with this demo's ports and its own host directory
   (/var/lib/fuzz-demo/ID, ID from the demo directory's path), so that two checkouts'
   demos never share anything;
2. builds a busybox image from Debian's busybox-static and serves it from a local
   docker-registry; serves the pipeline's input tarball over HTTP (both on 127.0.0.1,
   only while this script runs);
3. `fuzz server --detach` (the orchestrator), `fuzz apply` (3 local nodes that join it);
4. `fuzz workflow start pipeline …/pipeline.yaml --watch`: ingress, untar, two jobs side
   by side, a summary, egress, with the live status table, and prints the summary;
5. starts the notebook workflow (a long-lived web server in a job),
   `fuzz workflow port-forward notebook notebook 0:8888` (any free local port), fetches
   the page through that tunnel (CLI -> orchestrator -> the node's agent -> the job: no
   SSH), runs `fuzz workflow exec notebook notebook -- ls -l /tmp/www`, and cancels it;
6. a real Jupyter notebook server as a service (examples/workflows/jupyter.fz): the
   image from Debian's jupyter-notebook (built once, cached in ~/.cache/fuzz-test-images
   or $FUZZ_TEST_IMAGE_CACHE: a few minutes the first time), pushed to the demo's
   registry; `fuzz workflow start jupyter …`, waits until its status says READY, and
   prints its endpoint's URL (the orchestrator's HTTPS gateway), the CA to trust and how
   to sign in (the admin's token file, or a fresh login code). It keeps running (persist)
   after the demo; the next `make demo` starts it anew.

Ports: ``DEMO_PORTS=ORCHESTRATOR,REGISTRY,WEB`` (0: any free port); by default free ones
are chosen on the first run and recorded in ``.demo/ports.json``, and later runs use the
recorded ones (the nodes know the orchestrator's and the registry's). A port in use is one
line, never a traceback. The registry is known as ours by a random marker in its answers
(see fuzz.testing.oci.serve_registry): the image is never pushed to another one.

The orchestrator and nodes keep running afterwards; ``demo.py --destroy`` (``make
demo-destroy``) stops them and forgets the ports.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from fuzz.testing.jupyter_image import jupyter_layout
from fuzz.testing.oci import (
    BUSYBOX_REPO,
    MissingPartError,
    Registry,
    build_busybox_layout,
    free_port,
    push_layout,
    serve_registry,
)
from fuzz.testing.web import serve_directory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = ROOT / "examples" / "local" / "fuzz.yaml"
EXAMPLE_WORKFLOWS = ROOT / "examples" / "workflows"
DEMO = Path(os.environ.get("DEMO_DIR") or ROOT / ".demo").resolve()
PORTS_FILE = DEMO / "ports.json"
HOST_PATHS = Path("/var/lib/fuzz-demo")  # the examples' host_paths root
HOST_ROOT = HOST_PATHS / hashlib.sha256(str(DEMO).encode()).hexdigest()[:12]
RESULTS = HOST_ROOT / "admin" / "results"  # the admin's part of this demo's host path
NOTEBOOK_PORT = 8888  # the job's own port, on its loopback
JUPYTER = "jupyter"  # the notebook service's workflow, service and endpoint
JUPYTER_READY_TIMEOUT = 300.0  # a cold start of the notebook server on a loaded machine
SERVER_DATA = DEMO / ".fuzz" / "server"  # examples/local's orchestrator.data_dir
PORTS_HELP = "ORCHESTRATOR,REGISTRY,WEB (0: any free port)"
TEXTS = {
    "inputs/hpc.txt": "Today's HPC is a flat Beowulf cluster reached over SSH.\n",
    "inputs/fuzz.txt": "fuzz rebuilds it in layers:\nsubstrate, orchestrate, federate.\n",
}


class DemoError(Exception):
    """Why the demo cannot go on, in one line."""


@dataclass(frozen=True)
class Ports:
    """This demo's ports on 127.0.0.1, and the examples' ports they stand in for."""

    orchestrator: int
    registry: int
    web: int

    EXAMPLES: ClassVar[dict[str, int]] = {"orchestrator": 7400, "registry": 5000, "web": 8000}
    ROLES: ClassVar[dict[str, str]] = {
        "orchestrator": "the orchestrator", "registry": "the demo's registry",
        "web": "the demo's web server"}

    def substitute(self, text: str) -> str:
        """``text`` (an example spec or workflow) with this demo's addresses and host path."""
        for role, example in self.EXAMPLES.items():
            text = text.replace(f"127.0.0.1:{example}", f"127.0.0.1:{getattr(self, role)}")
        return text.replace(str(HOST_PATHS), str(HOST_ROOT))


def parse_ports(value: str) -> list[int]:
    """``DEMO_PORTS``'s three numbers (0: any free port)."""
    try:
        numbers = [int(part) for part in value.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 3 or not all(0 <= number < 65536 for number in numbers):
        raise DemoError(f"DEMO_PORTS={value}: three TCP ports, {PORTS_HELP}, "
                        "e.g. DEMO_PORTS=7400,5000,8000")
    return numbers


def demo_ports() -> Ports:
    """The ports of this run: recorded by an earlier run, else ``DEMO_PORTS``, else free ones.

    The nodes of a running demo know its orchestrator and registry: other ports only
    after ``make demo-destroy``.
    """
    value = os.environ.get("DEMO_PORTS", "")
    asked = parse_ports(value) if value else [0, 0, 0]
    if PORTS_FILE.exists():
        recorded = Ports(**json.loads(PORTS_FILE.read_text()))
        kept = list(asdict(recorded).values())
        if any(port not in (0, old) for port, old in zip(asked, kept, strict=True)):
            raise DemoError(
                f"this checkout's demo runs on ports {','.join(map(str, kept))} ({PORTS_FILE}): "
                "run `make demo-destroy` first to change them")
        return recorded
    chosen: list[int] = []
    for number in asked:
        while number == 0 or number in chosen:
            number = free_port()
        chosen.append(number)
    return Ports(*chosen)


def check_free(ports: Ports) -> None:
    """Refuse, in one line, a port that another process holds."""
    for role in Ports.EXAMPLES:
        port = getattr(ports, role)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # as the servers bind: the last run's connections in TIME_WAIT hold no port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise DemoError(
                    f"port {port} ({Ports.ROLES[role]}) is in use by another process: free "
                    f"it, or choose other ports with DEMO_PORTS={PORTS_HELP}") from None


def shown(path: Path) -> str:
    """``path`` as the user would type it from the checkout."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def fuzz_argv(*args: str) -> list[str]:
    """The command line of a fuzz command against the demo cluster, shown first."""
    print(f"\n$ fuzz -C {shown(DEMO)} {' '.join(args)}", flush=True)
    return [sys.executable, "-m", "fuzz", "-C", str(DEMO), *args]


def fuzz(*args: str) -> None:
    """Run one fuzz command against the demo cluster."""
    subprocess.run(fuzz_argv(*args), check=True)


def wait_until(workflow: str, what: str, check: Callable[[dict[str, Any]], bool],
               timeout: float = 120) -> None:
    """Wait until ``check`` holds for ``workflow``'s status (``what`` it waits for)."""
    argv = [sys.executable, "-m", "fuzz", "-C", str(DEMO), "workflow", "status", workflow,
            "--json"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)):
            return
        time.sleep(0.5)
    raise DemoError(f"workflow {workflow} did not {what}")


def wait_running(workflow: str) -> None:
    """Wait until every task of ``workflow`` runs."""
    wait_until(workflow, "start running",
               lambda status: all(task["state"] == "RUNNING" for task in status["tasks"]))


def wait_ended(workflow: str) -> None:
    """Wait until ``workflow`` has ended (a cancel takes a moment: its jobs get SIGTERM)."""
    wait_until(workflow, "end",
               lambda status: status["state"] in ("SUCCEEDED", "FAILED", "CANCELED"))


def fetch_through(address: str, timeout: float = 60) -> str:
    """The page at ``address`` (HOST:PORT), once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://{address}/", timeout=10) as reply:
                return str(reply.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def notebook() -> None:
    """Reach a long-lived service in a job through port-forward, and look inside it."""
    fuzz("workflow", "start", "notebook", "workflows/notebook.yaml")
    wait_running("notebook")
    forward = subprocess.Popen(
        fuzz_argv("workflow", "port-forward", "notebook", "notebook", f"0:{NOTEBOOK_PORT}",
                  "--json"), stdout=subprocess.PIPE, text=True)
    try:
        assert forward.stdout is not None
        listening = json.loads(forward.stdout.readline() or "{}")
        if listening.get("event") != "listening":
            raise DemoError("fuzz workflow port-forward did not start listening")
        print(json.dumps(listening), flush=True)
        address = listening["address"]
        print(f"\n$ curl http://{address}/\n{fetch_through(address)}", end="", flush=True)
    finally:
        forward.send_signal(signal.SIGINT)  # Ctrl-C
        forward.communicate()
    fuzz("workflow", "exec", "notebook", "notebook", "--", "ls", "-l", "/tmp/www")
    fuzz("workflow", "cancel", "notebook")
    wait_ended("notebook")  # so that the next demo may start it again


def fuzz_json(*args: str) -> Any:
    """The ``--json`` output of a fuzz command against the demo cluster (not shown)."""
    argv = [sys.executable, "-m", "fuzz", "-C", str(DEMO), *args, "--json"]
    return json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)


def jupyter_ready(status: dict[str, Any]) -> bool:
    """Whether the notebook service is READY; a refusal when it can no longer be."""
    if status["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
        raise DemoError(f"the notebook workflow ended {status['state']}: see "
                        f"`fuzz -C {shown(DEMO)} workflow status {JUPYTER}`")
    return any(task.get("readiness") == "READY" for task in status["tasks"])


def stop_jupyter() -> None:
    """Stop the notebook workflow if it runs (persist: nothing else ends it)."""
    if any(entry["name"] == JUPYTER and entry["state"] not in ("SUCCEEDED", "FAILED", "CANCELED")
           for entry in fuzz_json("workflow", "list")):
        fuzz("workflow", "stop", JUPYTER)
        wait_ended(JUPYTER)


def jupyter(registry: Registry) -> None:
    """Run a real Jupyter notebook server as a service and print its endpoint's URL."""
    print("\nthe Jupyter image (Debian's jupyter-notebook; built once and cached, a few "
          "minutes the first time) ...", flush=True)
    image = push_layout(jupyter_layout().path, registry, "fuzz/jupyter")
    print(f"image {image.reference} ({image.digest})")
    stop_jupyter()  # the last demo's (persist: it runs until stopped)
    fuzz("workflow", "start", JUPYTER, "workflows/jupyter.fz")
    print("waiting until the notebook service is READY (its readiness probe) ...", flush=True)
    wait_until(JUPYTER, "become READY", jupyter_ready, timeout=JUPYTER_READY_TIMEOUT)
    fuzz("workflow", "endpoints", JUPYTER)
    [endpoint] = fuzz_json("workflow", "endpoints", JUPYTER)
    code = fuzz_json("iam", "user", "code", "admin")["code"]
    print(f"\nJupyter is READY: open {endpoint['url']}\n"
          f"  The gateway's certificate is issued by the cluster's CA, "
          f"{shown(SERVER_DATA / 'ca.pem')}: trust it, or accept the browser's warning.\n"
          f"  Sign in on its page with this one-time login code: {code}\n"
          f"  or with your token: cat {shown(SERVER_DATA / 'admin.token')}\n"
          f"  (a new code: fuzz -C {shown(DEMO)} iam user code admin). "
          f"Stop it: fuzz -C {shown(DEMO)} workflow stop {JUPYTER}", flush=True)


def write_inputs(directory: Path) -> None:
    """The tarball the pipeline ingresses."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in TEXTS.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (directory / "inputs.tar.gz").write_bytes(buffer.getvalue())


def write_cluster(ports: Ports) -> None:
    """This demo's spec and workflows: the examples with its ports and host path."""
    (DEMO / "fuzz.yaml").write_text(ports.substitute(EXAMPLE_SPEC.read_text()))
    (DEMO / "workflows").mkdir(exist_ok=True)
    for name in ("pipeline.yaml", "notebook.yaml", "jupyter.fz"):
        (DEMO / "workflows" / name).write_text(
            ports.substitute((EXAMPLE_WORKFLOWS / name).read_text()))
    PORTS_FILE.write_text(json.dumps(asdict(ports)) + "\n")


def stop_earlier_orchestrator() -> None:
    """A previous demo's orchestrator stops (it is started anew, as this code)."""
    if (DEMO / "fuzz.yaml").exists():
        fuzz("server", "--stop")


def run() -> None:
    """Bring the demo cluster up and run the workflows."""
    DEMO.mkdir(parents=True, exist_ok=True)
    ports = demo_ports()
    stop_earlier_orchestrator()
    check_free(ports)
    write_cluster(ports)
    print(f"this demo: {shown(DEMO)}, ports {ports.orchestrator} (orchestrator), "
          f"{ports.registry} (registry), {ports.web} (web); host path {HOST_ROOT}")
    for part in ("registry", "www"):
        (DEMO / part).mkdir(exist_ok=True)
    write_inputs(DEMO / "www")
    shutil.rmtree(RESULTS, ignore_errors=True)
    print("building the busybox image and starting the demo registry and web server ...")
    layout = DEMO / "image"
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir()
    with serve_registry(DEMO / "registry", port=ports.registry) as registry, \
            serve_directory(DEMO / "www", port=ports.web):
        image = push_layout(build_busybox_layout(layout), registry, BUSYBOX_REPO)
        print(f"image {image.reference} ({image.digest})")
        fuzz("init")
        fuzz("server", "--detach")
        fuzz("apply", "--auto-approve")
        fuzz("workflow", "start", "pipeline", "workflows/pipeline.yaml",
             "--watch")
        summary = RESULTS / "summary.txt"
        print(f"\n$ cat {summary}\n{summary.read_text()}", end="")
        notebook()
        jupyter(registry)
    print(f"\nThe orchestrator, the 3 nodes and Jupyter keep running: try `fuzz -C {shown(DEMO)} "
          "workflow list`.\nStop them with: make demo-destroy")


def destroy() -> None:
    """Stop the notebook, delete the demo's nodes, stop its orchestrator, forget its ports
    and results."""
    if not (DEMO / "fuzz.yaml").exists():
        print(f"no demo in {shown(DEMO)}: nothing to destroy")
        return
    try:
        stop_jupyter()  # else its node would wait for it to drain
    except subprocess.CalledProcessError:  # the orchestrator is down: no workflow runs
        print("the orchestrator does not answer: no notebook to stop")
    fuzz("destroy", "--auto-approve")
    fuzz("server", "--stop")
    PORTS_FILE.unlink(missing_ok=True)
    shutil.rmtree(HOST_ROOT, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Run the demo (``--destroy``: take it down); 0 when every step succeeded."""
    try:
        destroy() if argv[1:] == ["--destroy"] else run()
    except subprocess.CalledProcessError as exc:
        print(f"demo failed: fuzz {' '.join(map(str, exc.cmd[5:]))} exited {exc.returncode}",
              file=sys.stderr)
        return 1
    except (DemoError, MissingPartError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the web server's port taken since it was checked, a full disk
        print(f"demo: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
