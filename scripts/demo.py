"""`make demo`: a local cluster, its orchestrator, and the sample pipeline in real containers.

What it does, each step a real `fuzz` command printed before it runs:

1. builds a busybox image from Debian's busybox-static and serves it from a local
   docker-registry on 127.0.0.1:5000; serves the pipeline's input tarball over HTTP
   on 127.0.0.1:8000 (both only while this script runs);
2. `fuzz server --detach` (the orchestrator), `fuzz apply` (3 local nodes that join it);
3. `fuzz workflow start pipeline examples/workflows/pipeline.yaml --watch`: ingress,
   untar, two jobs side by side, a summary, egress, with the live status table;
4. prints the egressed summary;
5. starts examples/workflows/notebook.yaml (a long-lived web server in a job),
   `fuzz workflow port-forward notebook notebook 8889:8888`, fetches the page through
   that tunnel (CLI -> orchestrator -> the node's agent -> the job: no SSH), runs
   `fuzz workflow exec notebook notebook -- ls -l /tmp/www`, and cancels the notebook.

The orchestrator and nodes keep running afterwards (`make demo-destroy` stops them).
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz.testing.oci import BUSYBOX_REPO, build_busybox_layout, push_layout, serve_registry
from fuzz.testing.web import serve_directory

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "examples" / "local"
PIPELINE = ROOT / "examples" / "workflows" / "pipeline.yaml"
NOTEBOOK = ROOT / "examples" / "workflows" / "notebook.yaml"
NOTEBOOK_PORTS = "8889:8888"  # on this machine the job's own 8888 is taken by the job
WORK = CLUSTER / ".fuzz" / "demo"
RESULTS = Path("/var/lib/fuzz-demo/admin/results")  # examples/local's host path, admin's part
REGISTRY_PORT = 5000
WEB_PORT = 8000
TEXTS = {
    "inputs/hpc.txt": "Today's HPC is a flat Beowulf cluster reached over SSH.\n",
    "inputs/fuzz.txt": "fuzz rebuilds it in layers:\nsubstrate, orchestrate, federate.\n",
}


def fuzz_argv(*args: str) -> list[str]:
    """The command line of a fuzz command against the demo cluster, shown first."""
    print(f"\n$ fuzz -C examples/local {' '.join(args)}", flush=True)
    return [sys.executable, "-m", "fuzz", "-C", str(CLUSTER), *args]


def fuzz(*args: str) -> None:
    """Run one fuzz command against the demo cluster."""
    subprocess.run(fuzz_argv(*args), check=True)


def wait_until(workflow: str, what: str, check: Callable[[dict[str, Any]], bool],
               timeout: float = 120) -> None:
    """Wait until ``check`` holds for ``workflow``'s status (``what`` it waits for)."""
    argv = [sys.executable, "-m", "fuzz", "-C", str(CLUSTER), "workflow", "status", workflow,
            "--json"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check(json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)):
            return
        time.sleep(0.5)
    raise SystemExit(f"workflow {workflow} did not {what}")


def wait_running(workflow: str) -> None:
    """Wait until every task of ``workflow`` runs."""
    wait_until(workflow, "start running",
               lambda status: all(task["state"] == "RUNNING" for task in status["tasks"]))


def wait_ended(workflow: str) -> None:
    """Wait until ``workflow`` has ended (a cancel takes a moment: its jobs get SIGTERM)."""
    wait_until(workflow, "end",
               lambda status: status["state"] in ("SUCCEEDED", "FAILED", "CANCELED"))


def fetch_through(port: int, timeout: float = 60) -> str:
    """The page at 127.0.0.1:``port``, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
                return str(reply.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def notebook() -> None:
    """Reach a long-lived service in a job through port-forward, and look inside it."""
    fuzz("workflow", "start", "notebook", str(NOTEBOOK))
    wait_running("notebook")
    forward = subprocess.Popen(fuzz_argv("workflow", "port-forward", "notebook", "notebook",
                                         NOTEBOOK_PORTS))
    try:
        local = int(NOTEBOOK_PORTS.partition(":")[0])
        print(f"\n$ curl http://127.0.0.1:{local}/\n{fetch_through(local)}", end="", flush=True)
    finally:
        forward.send_signal(signal.SIGINT)  # Ctrl-C
        forward.wait()
    fuzz("workflow", "exec", "notebook", "notebook", "--", "ls", "-l", "/tmp/www")
    fuzz("workflow", "cancel", "notebook")
    wait_ended("notebook")  # so that the next demo may start it again


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


def main() -> int:
    """Run the demo; the exit code is the workflow's (0 when it succeeded)."""
    (WORK / "registry").mkdir(parents=True, exist_ok=True)
    (WORK / "www").mkdir(exist_ok=True)
    write_inputs(WORK / "www")
    shutil.rmtree(RESULTS, ignore_errors=True)
    print("building the busybox image and starting the demo registry and web server ...")
    layout = WORK / "image"
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir()
    with serve_registry(WORK / "registry", port=REGISTRY_PORT) as registry, \
            serve_directory(WORK / "www", port=WEB_PORT):
        image = push_layout(build_busybox_layout(layout), registry, BUSYBOX_REPO)
        print(f"image {image.reference} ({image.digest})")
        fuzz("init")
        fuzz("server", "--stop")  # a previous demo's orchestrator: started anew, as this code
        fuzz("server", "--detach")
        fuzz("apply", "--auto-approve")
        fuzz("workflow", "start", "pipeline", str(PIPELINE), "--watch")
        summary = RESULTS / "summary.txt"
        print(f"\n$ cat {summary}\n{summary.read_text()}", end="")
        notebook()
    print("\nThe orchestrator and the 3 nodes keep running: try `fuzz -C examples/local "
          "workflow list`.\nStop them with: make demo-destroy")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        print(f"demo failed: {' '.join(map(str, exc.cmd[2:]))} exited {exc.returncode}",
              file=sys.stderr)
        sys.exit(1)
