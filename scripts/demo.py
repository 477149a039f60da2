"""`make demo`: a local cluster, its orchestrator, and the sample pipeline in real containers.

What it does, each step a real `fuzz` command printed before it runs:

1. builds a busybox image from Debian's busybox-static and serves it from a local
   docker-registry on 127.0.0.1:5000; serves the pipeline's input tarball over HTTP
   on 127.0.0.1:8000 (both only while this script runs);
2. `fuzz server --detach` (the orchestrator), `fuzz apply` (3 local nodes that join it);
3. `fuzz workflow start pipeline examples/workflows/pipeline.yaml --watch`: ingress,
   untar, two jobs side by side, a summary, egress, with the live status table;
4. prints the egressed summary.

The orchestrator and nodes keep running afterwards (`make demo-destroy` stops them).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from fuzz.testing.oci import BUSYBOX_REPO, build_busybox_layout, push_layout, serve_registry
from fuzz.testing.web import serve_directory

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "examples" / "local"
PIPELINE = ROOT / "examples" / "workflows" / "pipeline.yaml"
WORK = CLUSTER / ".fuzz" / "demo"
RESULTS = Path("/tmp/fuzz-demo/results")
REGISTRY_PORT = 5000
WEB_PORT = 8000
TEXTS = {
    "inputs/hpc.txt": "Today's HPC is a flat Beowulf cluster reached over SSH.\n",
    "inputs/fuzz.txt": "fuzz rebuilds it in layers:\nsubstrate, orchestrate, federate.\n",
}


def fuzz(*args: str) -> None:
    """Run one fuzz command against the demo cluster, showing it first."""
    print(f"\n$ fuzz -C examples/local {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "fuzz", "-C", str(CLUSTER), *args], check=True)


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
        fuzz("server", "--detach")
        fuzz("apply", "--auto-approve")
        fuzz("workflow", "start", "pipeline", str(PIPELINE), "--watch")
    summary = RESULTS / "summary.txt"
    print(f"\n$ cat {summary}\n{summary.read_text()}", end="")
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
