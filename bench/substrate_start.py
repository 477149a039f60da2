"""Benchmark: starting a job through the node agent versus a bare ``runc run`` and podman.

Runs 100 containers of ``/bin/true``, one after another, through the agent's gRPC
API and, in the same run, 100 bare ``runc run`` of an equivalent prepared bundle (same
image rootfs, same config: cpuset, memory limit, mounts, user) and 100 ``podman run --rm``
of the same image (``bench/peers/podman.py``), one of each in turn so that all three series
see the same load on the machine. The image comes from a real local registry
(docker-registry) and is pulled once by each before timing. Each agent job is prepared as
a queued task is (the lease acquired and the container created with ``prepare_only`` in one
call, untimed); what is timed is what is left once the task is dispatched:
``StartPreparedContainer`` (``runc start``) and the wait for its exit. Prints the medians
and fuzz's ratio to bare runc. ``--runs`` runs a smaller size for a quick look.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry; installs
podman on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from peers.podman import PodmanPeer, podman

from fuzz.clients.agent import AgentClient
from fuzz.resources import ResourceRequest
from fuzz.substrate.runtime.bundle import NOFILE_LIMIT, ContainerSpec, oci_config
from fuzz.substrate.runtime.containers import ContainerManager
from fuzz.testing.oci import BUSYBOX_REPO, build_busybox_layout, push_layout, serve_registry

RUNS = 100
WARMUP = 5
MEMORY = 64 * 2**20


def start_agent(workdir: Path, registry_host: str) -> tuple[subprocess.Popen[bytes], AgentClient]:
    """Start ``fuzz substrate serve`` and return it with a connected client."""
    token = secrets.token_urlsafe(24)
    token_file = workdir / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    state_dir = workdir / "agent"
    agent = subprocess.Popen(
        [sys.executable, "-m", "fuzz.substrate", "serve", "--state-dir", str(state_dir),
         "--token-file", str(token_file), "--insecure-registry", registry_host, "--insecure"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (state_dir / "agent.json").exists():
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the agent did not start")
        time.sleep(0.05)
    endpoint = json.loads((state_dir / "agent.json").read_text())["endpoint"]
    return agent, AgentClient(endpoint, token)


def agent_job(client: AgentClient, image: str, name: str) -> float:
    """Seconds for start + wait of ``/bin/true`` via the agent, prepared (lease and
    ``runc create``) before the clock starts, as while the task waits in a queue."""
    client.start_container(name, image, args=["/bin/true"], prepare_only=True,
                           lease=ResourceRequest(cores=1, memory_bytes=MEMORY))
    started = time.perf_counter()
    client.start_prepared_container(name)
    status = client.wait_container(name, 30)
    elapsed = time.perf_counter() - started
    if status.exit_code != 0 or status.state != "exited":
        raise SystemExit(f"job {name} did not succeed: {status}")
    client.remove_container(name, release_lease=True)
    return elapsed


def prepare_bundle(rootfs: Path, workdir: Path, cpu: int) -> Path:
    """A bundle with the config the agent would make (cpuset, memory limit, mounts, user)."""
    bundle = workdir / "bundle"
    bundle.mkdir()
    spec = ContainerSpec(id="bare", rootfs=rootfs, args=("/bin/true",), cpus=(cpu,),
                         memory_bytes=MEMORY)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)
    config = oci_config(spec, rootfs, nofile=nofile)  # as the agent's container manager does
    config["root"]["readonly"] = True  # the shared image rootfs is never written
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def bare_run(bundle: Path, name: str) -> float:
    """Seconds for one bare ``runc run`` of ``bundle``."""
    started = time.perf_counter()
    done = subprocess.run(["runc", "run", "--bundle", str(bundle), name],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"runc run failed: {done.stderr.decode()[-500:]}")
    return elapsed


def time_all(client: AgentClient, image: str, bundle: Path, peer: PodmanPeer,
             runs: int) -> tuple[list[float], list[float], list[float]]:
    """Agent jobs, bare runs and podman runs in turn, so that all see the same load."""
    agent_times, bare_times, podman_times = [], [], []
    for index in range(runs + WARMUP):
        agent = agent_job(client, image, f"bench-{index}")
        bare = bare_run(bundle, f"bare-bench-{index}")
        podman_seconds, _ = peer.run(image)
        if index >= WARMUP:
            agent_times.append(agent)
            bare_times.append(bare)
            podman_times.append(podman_seconds)
    return agent_times, bare_times, podman_times


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS,
                        help=f"timed starts per series (default {RUNS})")
    return parser.parse_args()


def main() -> int:
    """Run the three series and print their medians and the BENCH line."""
    runs = _arguments().runs
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-"))
    try:
        (workdir / "registry").mkdir()
        with serve_registry(workdir / "registry") as registry:
            image = push_layout(build_busybox_layout(workdir / "image"), registry, BUSYBOX_REPO)
            agent, client = start_agent(workdir, registry.host)
            try:
                with podman() as peer:
                    list(client.pull_image(image.reference))
                    peer.pull(image.reference)
                    lease = client.acquire_lease(1, memory_bytes=MEMORY)
                    cpu = lease.host_cpus[0]
                    client.release_lease(lease.id)
                    rootfs = next((workdir / "agent" / "images" / "rootfs").iterdir())
                    bundle = prepare_bundle(rootfs, workdir, cpu)
                    agent_times, bare_times, podman_times = time_all(
                        client, image.reference, bundle, peer, runs)
            finally:
                client.close()
                agent.terminate()
                agent.wait(30)
                # Jobs outlive the agent, so its container monitor does too: stop it here.
                ContainerManager(workdir / "agent").shutdown_monitor()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    agent_median = statistics.median(agent_times)
    bare_median = statistics.median(bare_times)
    podman_median = statistics.median(podman_times)
    print(f"container start, median over {runs} runs (the peers' raw numbers first):")
    print(f"  bare runc run:              {bare_median * 1000:7.1f} ms")
    print(f"  podman run --rm:            {podman_median * 1000:7.1f} ms "
          f"({podman_median / bare_median:.1f}x bare runc)")
    print(f"  agent start+wait, prepared: {agent_median * 1000:7.1f} ms")
    print(f"BENCH start_ratio_vs_runc={agent_median / bare_median:.2f} x target<=1.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
