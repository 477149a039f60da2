"""Benchmark: a soak on a local cluster while its agents and its orchestrator are killed.

One task array of 500 tasks of 1 to 3 seconds each (:mod:`fuzz.testing.chaos`: each
task marks the start and the end of its work in a persistent volume) runs twice on
a 3-node local cluster (``fuzz init``, ``fuzz server``, ``fuzz apply``): first with
no faults, for the baseline makespan, then with ``kill -9`` of a random agent every
20 s and of the orchestrator every 60 s. Each is restarted in place as its
service manager would: an agent with the same command line in the same state dir
(it re-adopts its jobs' containers), the orchestrator with ``fuzz server --detach``
on the same data dir. Prints, for the faulted run:

- ``chaos_tasks_lost``: tasks that did not end SUCCEEDED;
- ``chaos_tasks_run_twice``: tasks whose work started twice, read from the marks the
  tasks wrote (the workload has no retry policy, so no second start was asked for);
- ``chaos_makespan_ratio``: the faulted run's makespan over the fault-free one's.

A faulted run still going after ``--deadline-factor`` times the baseline is cut
there: its unfinished tasks count as lost and the ratio is the time it had run.
Flags size it down (``--tasks 60 --nodes 2``). Everything it starts (registry,
orchestrator, agents and their container monitors) is stopped on the way out,
Ctrl-C included.

Needs root and Debian's runc, skopeo, umoci, busybox-static, docker-registry.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fuzz.api import orchestrator_pb2 as pb
from fuzz.clients.orchestrator import OrchestratorClient, OrchestratorError
from fuzz.fsutil import flock_held, read_json
from fuzz.substrate.statedir import INFO_FILE, lock_held, lock_pid
from fuzz.testing.boot import stop_agents
from fuzz.testing.chaos import Tally, read_marks, soak_fuzzfile, tally
from fuzz.testing.cluster import LocalCluster, local_cluster
from fuzz.testing.oci import (
    BUSYBOX_REPO,
    build_busybox_layout,
    free_port,
    push_layout,
    serve_registry,
)

CLUSTER = "chaos"
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED")
POLL = 0.5
PROGRESS_EVERY = 10.0
STOP_WAIT = 10.0  # for a killed process to let go of its lock
START_WAIT = 30.0  # for a restarted agent to publish itself
WARM_FUZZFILE = """\
version: v1
jobs:
  warm:
    image: {{uri: {image}}}
    command: [/bin/true]
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    task-array: {{start: 1, end: {tasks}}}
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: sizes and kill intervals."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=500, help="tasks in the array (500)")
    parser.add_argument("--nodes", type=int, default=3, help="local nodes (3)")
    parser.add_argument("--agent-kill-every", type=float, default=20.0, metavar="SECONDS",
                        help="kill -9 a random agent this often (20)")
    parser.add_argument("--server-kill-every", type=float, default=60.0, metavar="SECONDS",
                        help="kill -9 the orchestrator this often (60)")
    parser.add_argument("--deadline-factor", type=float, default=3.0, metavar="X",
                        help="cut the faulted run after X times the baseline makespan (3)")
    parser.add_argument("--seed", type=int, default=None, help="which agents die (random)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.nodes < 1:
        parser.error("--tasks and --nodes must be at least 1")
    if args.agent_kill_every <= 0 or args.server_kill_every <= 0 or args.deadline_factor <= 1:
        parser.error("the kill intervals must be positive and --deadline-factor above 1")
    return args


def say(text: str) -> None:
    """A progress line, at once."""
    print(text, flush=True)


# --- faults ---------------------------------------------------------------------------


def _process_of(pid: int) -> tuple[list[str], dict[str, str], str]:
    """The command line, environment and working directory of process ``pid``."""
    proc = Path("/proc") / str(pid)
    argv = [arg.decode() for arg in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
    env = dict(entry.decode().split("=", 1)
               for entry in (proc / "environ").read_bytes().split(b"\0") if b"=" in entry)
    return argv, env, os.readlink(proc / "cwd")


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def kill_agent_and_restart(state_dir: Path) -> subprocess.Popen[bytes]:
    """kill -9 the agent of ``state_dir`` and start it again as it was (same command line,
    environment and state dir, output appended to its agent.log), as systemd would."""
    info = read_json(state_dir / INFO_FILE) or {}
    pid = info.get("pid") or lock_pid(state_dir)
    if not isinstance(pid, int):
        raise RuntimeError(f"no agent runs in {state_dir}")
    argv, env, cwd = _process_of(pid)
    os.kill(pid, signal.SIGKILL)
    _wait(f"the killed agent {pid} to let go of {state_dir}",
          lambda: not lock_held(state_dir), STOP_WAIT)
    (state_dir / INFO_FILE).unlink(missing_ok=True)  # the dead agent's; the new one writes its own
    with open(state_dir / "agent.log", "ab") as log:
        agent = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    _wait(f"the restarted agent in {state_dir}",
          lambda: (read_json(state_dir / INFO_FILE) or {}).get("pid") == agent.pid
          or agent.poll() is not None, START_WAIT)
    if agent.poll() is not None:
        raise RuntimeError(f"the restarted agent in {state_dir} exited with {agent.returncode}")
    return agent


def kill_server_and_restart(cluster: LocalCluster) -> None:
    """kill -9 the orchestrator and start it again on its data dir (``fuzz server --detach``)."""
    data_dir = cluster.data_dir
    pid = int((read_json(data_dir / "server.json") or {})["pid"])
    os.kill(pid, signal.SIGKILL)
    _wait(f"the killed orchestrator {pid} to let go of its data dir",
          lambda: not flock_held(data_dir / "server.lock"), STOP_WAIT)
    cluster.must("server", "--detach", timeout=60)


class Chaos:
    """Kills a random agent every ``agent_every`` seconds and the orchestrator every
    ``server_every`` seconds, restarting each, in a thread of its own until stopped."""

    def __init__(self, cluster: LocalCluster, agent_every: float, server_every: float,
                 rng: random.Random) -> None:
        """Aim at ``cluster``'s agents and orchestrator; nothing happens before :meth:`start`."""
        self.cluster, self.agent_every, self.server_every = cluster, agent_every, server_every
        self.rng = rng
        self.agent_kills = self.server_kills = 0
        self.error: str | None = None
        self.restarted: list[subprocess.Popen[bytes]] = []  # the agents this process started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def node_dirs(self) -> list[Path]:
        """The state dirs of the cluster's local nodes."""
        root = self.cluster.directory / ".fuzz" / "nodes" / CLUSTER
        return sorted(d for d in root.iterdir() if (d / "meta.json").exists())

    def start(self) -> None:
        """Begin: the first kills come one interval from now."""
        self._thread.start()

    def stop(self) -> None:
        """Stop killing (a restart under way is finished first)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        began = time.monotonic()
        next_agent, next_server = began + self.agent_every, began + self.server_every
        while not self._stop.wait(max(min(next_agent, next_server) - time.monotonic(), 0)):
            try:
                if time.monotonic() >= next_server:
                    next_server += self.server_every
                    kill_server_and_restart(self.cluster)
                    self.server_kills += 1
                if time.monotonic() >= next_agent:
                    next_agent += self.agent_every
                    self.restarted.append(kill_agent_and_restart(
                        self.rng.choice(self.node_dirs())))
                    self.agent_kills += 1
            except Exception as exc:  # reported by the run; the cluster is left as it is
                self.error = f"{type(exc).__name__}: {exc}"
                return


# --- runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of the workload: how long it took, how it ended, and its books."""

    makespan: float  # seconds from its start to its end (or to the cut)
    state: str  # the workflow's final state, or CUT
    tally: Tally


def _latest(client: OrchestratorClient, name: str) -> pb.Workflow | None:
    """The workflow ``name`` now, or None while the orchestrator does not answer."""
    try:
        return client.get_workflow(name)
    except OrchestratorError:
        return None


def soak(cluster: LocalCluster, image: str, name: str, tasks: int, volume_root: Path,
         deadline: float | None = None, chaos: Chaos | None = None) -> Run:
    """Run the workload as workflow ``name`` (with ``chaos`` going meanwhile, if given);
    cut it after ``deadline`` seconds."""
    fuzzfile = cluster.directory / f"{name}.yaml"
    fuzzfile.write_text(soak_fuzzfile(image, name, tasks))
    with cluster.client() as client:
        began = time.monotonic()
        client.start_workflow(name, fuzzfile.read_text(), str(fuzzfile))
        if chaos is not None:
            chaos.start()
        workflow, last_said = None, began
        try:
            while True:
                time.sleep(POLL)
                seen = _latest(client, name)
                workflow = seen if seen is not None else workflow
                elapsed = time.monotonic() - began
                if time.monotonic() - last_said >= PROGRESS_EVERY:
                    last_said = time.monotonic()
                    say(_progress(name, elapsed, workflow, seen is None, chaos))
                if seen is not None and seen.state in FINAL_STATES:
                    break
                if deadline is not None and elapsed > deadline:
                    say(f"{name}: cut at {elapsed:.0f}s, {deadline:.0f}s being the deadline")
                    break
                if chaos is not None and chaos.error is not None:
                    raise RuntimeError(f"the chaos stopped: {chaos.error}")
        finally:
            if chaos is not None:
                chaos.stop()
        if seen is None or seen.state not in FINAL_STATES:
            settled = _settled(cluster, client, name)
            seen = settled if settled is not None else workflow
    return _books(seen, volume_root, name, tasks, elapsed)


def _settled(cluster: LocalCluster, client: OrchestratorClient, name: str
             ) -> pb.Workflow | None:
    """The workflow once the orchestrator answers again (restarted if it is down)."""
    if not flock_held(cluster.data_dir / "server.lock"):
        cluster.must("server", "--detach", timeout=60)
    deadline = time.monotonic() + 60
    while (found := _latest(client, name)) is None and time.monotonic() < deadline:
        time.sleep(POLL)
    return found


def _books(workflow: pb.Workflow | None, volume_root: Path, name: str, tasks: int,
           elapsed: float) -> Run:
    if workflow is None:
        raise RuntimeError(f"the orchestrator never answered for workflow {name}")
    states = {task.index: task.state for task in workflow.tasks}
    marks_dir = volume_root / "persistent" / workflow.owner / name
    marks = read_marks(marks_dir) if marks_dir.is_dir() else {}
    state, makespan = workflow.state, elapsed
    if state in FINAL_STATES:
        makespan = workflow.finished - workflow.created
    else:
        state = "CUT"
    return Run(makespan, state, tally(states, marks, range(1, tasks + 1)))


def _progress(name: str, elapsed: float, workflow: pb.Workflow | None, down: bool,
              chaos: Chaos | None) -> str:
    counts = collections.Counter(t.state for t in (workflow.tasks if workflow else []))
    shown = " ".join(f"{state.lower()}={n}" for state, n in sorted(counts.items()))
    line = f"{name}: {elapsed:5.0f}s {shown}"
    if down:
        line += " (orchestrator not answering)"
    if chaos is not None:
        line += f" | killed: {chaos.agent_kills} agents, {chaos.server_kills} orchestrators"
    return line


def warm(cluster: LocalCluster, image: str) -> None:
    """Pull the image on every node before timing (one /bin/true per core)."""
    with cluster.client() as client:
        cores = sum(node.cores for node in client.list_nodes())
        client.start_workflow("warm", WARM_FUZZFILE.format(image=image, tasks=cores),
                              "warm.yaml")
        ended = [update for update in client.watch_workflow("warm")][-1:]
        if not ended or ended[0].state != "SUCCEEDED":
            raise RuntimeError(f"the warm-up workflow did not succeed: {ended}")


def report(label: str, run: Run) -> None:
    """One line on a run: its makespan, end and books."""
    books = run.tally
    say(f"{label}: {run.state} in {run.makespan:.1f}s; lost {len(books.lost)}"
        f"{_some(books.lost)}, run twice {len(books.run_twice)}{_some(books.run_twice)}, "
        f"succeeded without finishing {len(books.unfinished_work)}"
        f"{_some(books.unfinished_work)}")


def _some(indices: tuple[int, ...], shown: int = 12) -> str:
    if not indices:
        return ""
    more = f" +{len(indices) - shown}" if len(indices) > shown else ""
    return f" (tasks {', '.join(map(str, indices[:shown]))}{more})"


# --- setting up and tearing down ------------------------------------------------------


@contextlib.contextmanager
def interrupted_as_keyboard() -> Iterator[None]:
    """SIGTERM and SIGHUP end the bench as Ctrl-C does, through every clean-up."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)


def _leftovers(workdir: Path) -> None:
    """Stop whatever the cluster's own tear-down left under ``workdir``: agents and their
    container monitors, an orchestrator, and mounts."""
    stop_agents(workdir, wait=5.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"fuzz\0" in cmdline and b"server\0" in cmdline and str(workdir).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(workdir))), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def main(argv: list[str]) -> int:
    """Set up, run the baseline and the faulted run, print the BENCH lines, clean up."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: runc needs it")
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-chaos-"))
    os.chmod(workdir, 0o755)
    volume_root = workdir / "volumes"
    began = time.monotonic()
    chaos: Chaos | None = None
    try:
        with interrupted_as_keyboard():
            (workdir / "registry").mkdir()
            (workdir / "cluster").mkdir()
            with serve_registry(workdir / "registry") as registry:
                image = push_layout(build_busybox_layout(workdir / "image"), registry,
                                    BUSYBOX_REPO).reference
                with local_cluster(workdir / "cluster", [registry.host], free_port(),
                                   nodes=args.nodes, cluster=CLUSTER,
                                   orchestrator={"volume_root": str(volume_root)}) as cluster:
                    say(f"cluster up: {args.nodes} nodes; warming the image")
                    warm(cluster, image)
                    say(f"baseline: {args.tasks} tasks, no faults")
                    baseline = soak(cluster, image, "baseline", args.tasks, volume_root)
                    report("baseline", baseline)
                    say(f"chaos: {args.tasks} tasks; kill -9 of an agent every "
                        f"{args.agent_kill_every:g}s, of the orchestrator every "
                        f"{args.server_kill_every:g}s")
                    chaos = Chaos(cluster, args.agent_kill_every, args.server_kill_every, rng)
                    faulted = soak(cluster, image, "chaos", args.tasks, volume_root,
                                   deadline=args.deadline_factor * baseline.makespan,
                                   chaos=chaos)
                    report("chaos", faulted)
                    say(f"killed {chaos.agent_kills} agents and {chaos.server_kills} "
                        f"orchestrators")
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        _leftovers(workdir)
        for agent in chaos.restarted if chaos is not None else []:
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=1)
        shutil.rmtree(workdir, ignore_errors=True)
    say(f"the whole run took {time.monotonic() - began:.0f}s")
    if faulted.tally.lost:
        say("note: the faulted makespan counts only the tasks that ran to an end; "
            f"{len(faulted.tally.lost)} did not succeed")
    print(f"BENCH chaos_tasks_lost={len(faulted.tally.lost)} tasks target<=0")
    print(f"BENCH chaos_tasks_run_twice={len(faulted.tally.run_twice)} tasks target<=0")
    print(f"BENCH chaos_makespan_ratio={faulted.makespan / baseline.makespan:.2f} x "
          f"target<=1.5")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
