"""Benchmark: the control plane at scale, one ``fuzz server`` on PostgreSQL and simulated nodes.

The orchestrator is the real ``fuzz server`` (a process of its own, plain text, its
store a fresh database on a PostgreSQL this bench starts, or on ``--postgres URL``).
The nodes are simulated agents, many in this process (fuzz/testing/simagents.py):
they speak the real agent API, join with join tokens and heartbeat as real agents
do, and start no containers (a start succeeds at once, the job exits 0
``--run-seconds`` later). Every figure goes through the orchestrator's own code
paths: registration, heartbeats, scheduling, leases, dispatch and completion.

- ``sim_nodes_heartbeat_p99_ms``: ``--nodes`` nodes (2,000) heartbeating at the
  agents' default interval (5 s), their first registrations spread over one
  interval; the p99 of the RegisterNode latency as the agents see it, over
  ``--heartbeat-window`` seconds once every node has joined.
- ``sched_tasks_per_s``: ``--tasks`` (100,000) one-core task-array tasks, all queued
  at once (workflows of 10,000 tasks, the default ``orchestrator.limits``), placed
  onto the nodes (64 cores each, so that every task fits at once). What is
  measured: tasks started at their agent (StartContainer answered) per second,
  from the first start to the last. The time from the last submission to the
  last start, and the heartbeat p99 during the run, are printed for context.
- ``orchestrator_rss_mib``: the orchestrator's peak resident memory (VmHWM) with
  the nodes registered and the tasks' workflows run to their end (or, past
  ``--timeout``, cancelled: the rate so far is then the figure, said as such).

- ``failover_seconds``: after the above, bench/failover.py's figure: kill -9 of the
  leading replica of two, on a PostgreSQL of its own, real agents and containers,
  under a running workflow, to the next job the new leader starts (median of 3).

``--profile`` samples the orchestrator with py-spy (GIL holder only) during the
scheduling run and prints where its time went, by function (self and inclusive).

Progress is printed as it goes. The simulated agents share the machine with the
orchestrator and PostgreSQL: on a small machine the figures are bounded by its
cores, which the bench prints.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from failover import TARGET_S as FAILOVER_TARGET_S
from failover import measure_failover_seconds

from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.fsutil import read_json
from fuzz.orchestrate.connect import admin_token_path
from fuzz.testing.cluster import fuzz_argv
from fuzz.testing.oci import free_port
from fuzz.testing.postgres import running_postgres
from fuzz.testing.simagents import SimulatedAgents

TASKS_PER_WORKFLOW = 10_000  # orchestrator.limits.tasks_per_workflow's default
TASKS_PER_ARRAY = 200  # the most tasks of one task array that run at once (Fuzzball's bound)
NODE_CORES = 64
HEARTBEAT_TARGET_MS = 500
TASKS_PER_S_TARGET = 500
FINAL = ("SUCCEEDED", "FAILED", "CANCELED")

SPEC = """\
version: 1
cluster: cpbench
orchestrator:
  listen: 127.0.0.1:{port}
  data_dir: server
  insecure: true
  store: {url}
"""


@dataclass(frozen=True)
class Server:
    """The running ``fuzz server``: its process, endpoint and admin token."""

    process: subprocess.Popen[bytes]
    endpoint: str
    admin_token: str

    def client(self) -> OrchestratorClient:
        """The orchestrator API as the admin."""
        return OrchestratorClient(self.endpoint, self.admin_token, timeout=120.0)

    def cpu_seconds(self) -> float:
        """The CPU time the server process has used so far (user and system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_mib(self, field: str) -> float:
        """``VmRSS`` or ``VmHWM`` (the peak) of the server process, in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")


def say(message: str) -> None:
    """A progress line, at once."""
    print(message, flush=True)


@contextmanager
def postgres_database(url: str | None) -> Iterator[str]:
    """The URL of a fresh database: on ``url``'s server, or on a PostgreSQL started here."""
    with ExitStack() as stack:
        if url is None:
            server = stack.enter_context(running_postgres())
            conninfo, base = server.conninfo, server.url("postgres")
        else:
            conninfo = base = url
        name = "cpbench_" + uuid.uuid4().hex[:12]
        with psycopg.connect(conninfo, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        try:
            yield base.rsplit("/", 1)[0] + "/" + name
        finally:
            with psycopg.connect(conninfo, autocommit=True) as db:
                db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def fuzz_server(directory: Path, store_url: str) -> Iterator[Server]:
    """``fuzz server`` (foreground, a child process) on ``store_url``, for the block."""
    (directory / "fuzz.yaml").write_text(SPEC.format(port=free_port(), url=store_url))
    subprocess.run(fuzz_argv("server", "--init"), cwd=directory, check=True,
                   capture_output=True)
    log = open(directory / "server.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(fuzz_argv("server"), cwd=directory, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while (found := read_json(directory / "server" / "server.json")) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fuzz server did not start: "
                                   + (directory / "server.log").read_text()[-2000:])
            time.sleep(0.1)
        token = admin_token_path(directory / "server").read_text().strip()
        yield Server(process, str(found["endpoint"]), token)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def join_nodes(server: Server, agents: SimulatedAgents) -> None:
    """Issue every node's join token, start the heartbeats, and wait until all joined."""
    began = time.monotonic()
    with server.client() as admin:
        tokens = {node.name: admin.issue_join_token(node.name).token for node in agents.nodes}
        say(f"issued {len(tokens)} join tokens in {time.monotonic() - began:.1f}s")
        agents.join(server.endpoint, tokens)
        while (joined := len(admin.list_nodes())) < len(tokens):
            say(f"  {joined}/{len(tokens)} nodes joined")
            time.sleep(2.0)
    say(f"{len(tokens)} nodes joined in {time.monotonic() - began:.1f}s")


def measure_heartbeats(server: Server, agents: SimulatedAgents, window: float) -> float:
    """The p99 heartbeat latency (ms) over ``window`` seconds of steady heartbeats; the
    server's CPU per heartbeat (it does nothing else meanwhile) is printed."""
    agents.heartbeat_latencies(clear=True)
    say(f"measuring heartbeats for {window:.0f}s")
    cpu = server.cpu_seconds()
    time.sleep(window)
    cpu = server.cpu_seconds() - cpu
    latencies = agents.heartbeat_latencies(clear=True)
    errors = agents.heartbeat_errors()
    say(f"  {len(latencies)} heartbeats ({len(latencies) / window:.0f}/s), p50 "
        f"{percentile(latencies, 0.5) * 1e3:.1f} ms, p99 {percentile(latencies, 0.99) * 1e3:.1f}"
        f" ms, max {max(latencies) * 1e3:.1f} ms; failed: {errors or 'none'}; orchestrator "
        f"CPU {cpu / max(len(latencies), 1) * 1e3:.3f} ms per heartbeat")
    return percentile(latencies, 0.99) * 1e3


def fuzzfile(tasks: int) -> str:
    """A workflow of ``tasks`` one-core tasks: task arrays of at most 200, all queued at once."""
    lines = ["version: v1", "jobs:"]
    first = 1
    job = 0
    while first <= tasks:
        last = min(tasks, first + TASKS_PER_ARRAY - 1)
        lines += [f"  work{job}:",
                  '    image: {uri: "docker://127.0.0.1:9/simulated:1"}',
                  "    command: [/bin/true]",
                  "    resource: {cpu: {cores: 1}, memory: {size: 16MiB}}",
                  f"    task-array: {{start: {first}, end: {last}}}"]
        first, job = last + 1, job + 1
    return "\n".join(lines) + "\n"


@contextmanager
def profiled(server: Server, out: Path | None) -> Iterator[None]:
    """Sample ``server`` with py-spy (the GIL holder) during the block, into ``out``."""
    if out is None:
        yield
        return
    spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--gil",
                            "--nonblocking", "--format", "raw", "--rate", "50",
                            "-p", str(server.process.pid), "-o", str(out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        spy.wait(60)


def print_profile(path: Path, top: int = 25) -> None:
    """The functions the sampled time went to: self (the innermost frame) and inclusive."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0] + ")"
                  for frame in stack.split(";")[1:]]  # the first is the thread
        if not frames:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        say("profile: no samples")
        return
    for title, counter in (("self", own), ("inclusive", inclusive)):
        say(f"profile ({total} samples of the GIL holder), {title}:")
        for frame, samples in counter.most_common(top):
            say(f"  {samples / total:6.1%}  {frame}")


def measure_scheduling(server: Server, agents: SimulatedAgents, tasks: int,
                       timeout: float) -> tuple[float, bool]:
    """Tasks started per second at the agents, first start to last; and whether all started."""
    before = agents.start_count()
    began = time.monotonic()
    server_cpu, own_cpu = server.cpu_seconds(), _own_cpu_seconds()
    with server.client() as admin:
        left, number = tasks, 0
        while left:
            size = min(left, TASKS_PER_WORKFLOW)
            admin.start_workflow(f"load{number}", fuzzfile(size), "Fuzzfile")
            left, number = left - size, number + 1
    submitted = time.monotonic()
    say(f"submitted {tasks} tasks in {number} workflow(s) in {submitted - began:.1f}s")
    deadline = submitted + timeout
    last_count, last_at = before, submitted
    while (count := agents.start_count() - before) < tasks and time.monotonic() < deadline:
        time.sleep(5.0)
        now, count = time.monotonic(), agents.start_count() - before
        say(f"  {count}/{tasks} started ({(count - (last_count - before)) / (now - last_at):.0f}"
            f"/s now), {agents.running()} running, RSS {server.memory_mib('VmRSS'):.0f} MiB")
        last_count, last_at = count + before, now
    starts = agents.starts()[before:]
    complete = len(starts) >= tasks
    server_cpu, own_cpu = server.cpu_seconds() - server_cpu, _own_cpu_seconds() - own_cpu
    if starts:
        per_task = server_cpu / len(starts)
        say(f"CPU per task started: orchestrator {per_task * 1e3:.2f} ms (at one core: at "
            f"most {1 / per_task:.0f} tasks/s), simulated agents and this bench "
            f"{own_cpu / len(starts) * 1e3:.2f} ms (heartbeats included)")
    if len(starts) < 2:
        return 0.0, False
    first, last = starts[0].at, starts[-1].at
    rate = len(starts) / max(last - first, 1e-9)
    say(f"{len(starts)} tasks started {'' if complete else '(NOT all: timed out) '}in "
        f"{last - first:.1f}s from the first start to the last: {rate:.0f} tasks/s; the last "
        f"started {last - submitted:.1f}s after the last submission")
    return rate, complete


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def wait_for_workflows(server: Server, timeout: float, cancel: bool) -> Counter[str]:
    """Wait until every workflow has ended (with ``cancel``: cancelled first, the tasks
    that never started with them); their final states, counted."""
    deadline = time.monotonic() + timeout
    with server.client() as admin:
        if cancel:
            for workflow in admin.list_workflows():
                admin.cancel_workflow(workflow.name)
        while True:
            states = Counter(workflow.state for workflow in admin.list_workflows())
            if all(state in FINAL for state in states) or time.monotonic() > deadline:
                return states
            time.sleep(2.0)


def main() -> int:
    """Run it and print the figures, ending with the BENCH lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2000, help="simulated nodes (2000)")
    parser.add_argument("--tasks", type=int, default=100_000, help="queued tasks (100000)")
    parser.add_argument("--run-seconds", type=float, default=0.5,
                        help="how long each simulated job runs (0.5)")
    parser.add_argument("--heartbeat-window", type=float, default=30.0,
                        help="seconds of steady heartbeats measured (30)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds the tasks may take to start (1800); past them the rate "
                        "so far is the figure and the workflows are cancelled")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="a PostgreSQL server to use (default: one started here)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the orchestrator with py-spy while it schedules")
    parser.add_argument("--skip-failover", action="store_true",
                        help="leave out failover_seconds (real containers; minutes)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server and PostgreSQL
    say(f"{os.cpu_count()} CPUs here, shared by the orchestrator, PostgreSQL and the "
        f"{args.nodes} simulated nodes")
    figures: list[str] = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cpbench-")))
        url = stack.enter_context(postgres_database(args.postgres))
        # the agents first: they stop after the server, which calls them to the end
        agents = stack.enter_context(SimulatedAgents(args.nodes, cores=NODE_CORES,
                                                     run_seconds=args.run_seconds))
        server = stack.enter_context(fuzz_server(workdir, url))
        say(f"fuzz server (pid {server.process.pid}) at {server.endpoint} on {url}")
        join_nodes(server, agents)
        p99 = measure_heartbeats(server, agents, args.heartbeat_window)
        figures.append(f"BENCH sim_nodes_heartbeat_p99_ms={p99:.1f} ms "
                       f"target<{HEARTBEAT_TARGET_MS}")
        profile = workdir / "profile.txt" if args.profile else None
        with profiled(server, profile):
            rate, complete = measure_scheduling(server, agents, args.tasks, args.timeout)
        loaded = agents.heartbeat_latencies(clear=True)
        if loaded:
            say(f"heartbeats while scheduling: p99 {percentile(loaded, 0.99) * 1e3:.1f} ms, "
                f"median {statistics.median(loaded) * 1e3:.1f} ms")
        figures.append(f"BENCH sched_tasks_per_s={rate:.0f} tasks/s target>={TASKS_PER_S_TARGET}")
        states = wait_for_workflows(server, args.timeout, cancel=not complete)
        say(f"workflows: {dict(states)}")
        say(f"orchestrator memory: {server.memory_mib('VmRSS'):.0f} MiB now, "
            f"{server.memory_mib('VmHWM'):.0f} MiB at its peak")
        figures.append(f"BENCH orchestrator_rss_mib={server.memory_mib('VmHWM'):.0f} MiB "
                       f"({args.nodes} nodes, {args.tasks} tasks)")
        if profile is not None and profile.exists():
            print_profile(profile)
    if not args.skip_failover:  # issue 23's third figure: replicas, real agents and runc
        say("failover: kill -9 of the leading replica under a running workflow "
            "(bench/failover.py)")
        figures.append(f"BENCH failover_seconds={measure_failover_seconds():.2f} s "
                       f"target<{FAILOVER_TARGET_S:g}")
    for line in figures:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
