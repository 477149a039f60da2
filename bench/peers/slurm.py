"""The Slurm peer: slurmctld + slurmd + munged, one node on 127.0.0.1, tuned for throughput.

Installs Debian's Slurm (22.05 on Debian 12) and munge on first use (through
``scripts/install-system-packages.sh``, as the Makefile installs the project's
packages), writes a one-node configuration, a munge key and state folders for the
run into a temporary folder, and starts the three daemons in the foreground inside a
new PID namespace (``unshare --pid --kill-child``): when the bench ends, is
interrupted or dies, the namespace dies and every daemon and job step in it with it
-- no leftovers, no systemd (``setpriv --pdeathsig`` ends the namespace even when the
bench itself is killed with SIGKILL). The node is given exactly ``slots`` CPUs (the slots the
caller asks for, whatever the machine has), so that Slurm and fuzz run the same
number of one-core jobs at once.

The ways to run many small jobs, each timed for ``jobs`` one-core commands:

- job steps in one allocation (``salloc`` holding every slot, ``srun --exact -n1 -c1``
  per step, ``slots`` at a time): Slurm's fastest, as its high-throughput guide says;
- the same steps with ``--container`` (Slurm's OCI support running runc on a bundle);
- one ``sbatch --array`` of single-core tasks;
- one ``srun`` per job (each its own allocation).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
INSTALLER = Path(__file__).resolve().parents[2] / "scripts" / "install-system-packages.sh"
NODE = "bench"
PARTITION = "bench"
START_TIMEOUT = 60.0
POLL = 0.1
UNFINISHED = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING"}

# Each setting says why it is there. The figures Slurm reaches depend most on these.
SLURM_CONF = """\
ClusterName=fuzzbench
# One controller on this machine, reached on loopback only.
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
# munge with a key made for this run, on its own socket (not the system's munged).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={state}
SlurmdSpoolDir={spool}
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd.log
# Logging costs time on every job: errors only.
SlurmctldDebug=error
SlurmdDebug=error
# Processes are tracked by parentage (no cgroup set-up per job); no CPU binding plugin:
# the cheapest launch path, and fuzz's containers get their own cgroups anyway.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# One-core jobs packed by core, as fuzz leases cores.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# FIFO without backfill: every job is alike, backfill only adds passes over the queue.
SchedulerType=sched/builtin
# Throughput: start batch jobs at once (no batch_sched_delay), look at the whole queue
# on each pass, and run a pass at least every second besides the event-driven ones.
SchedulerParameters=batch_sched_delay=0,default_queue_depth={queue_depth},sched_interval=1
# No accounting or job completion logging: nothing to write per job.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
# No mail is sent: the default MailProg is not installed.
MailProg=/bin/true
SwitchType=switch/none
# Don't copy the submitter's rlimits into every job (a few syscalls less per task).
PropagateResourceLimits=NONE
# Finished jobs leave the controller's tables quickly (the guide's advice for many jobs),
# and there is room for many in the queue and in one array.
MinJobAge=5
MaxJobCount={max_jobs}
MaxArraySize={max_array}
# The node has the slots the caller asks for, not the machine's cores: slurmd must not
# correct it from what it sees.
SlurmdParameters=config_overrides
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={slots} Boards=1 SocketsPerBoard=1 \
CoresPerSocket={slots} ThreadsPerCore=1 RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""

# Slurm's OCI support (oci.conf, next to slurm.conf): runc runs the step's container in
# the bundle Slurm writes from the one given to --container (%b), one call per step
# (RunTimeRun); 22.05 wants the query, kill and delete commands beside it.
OCI_CONF = """\
RunTimeQuery="runc --root={runc_root} state %n.%u.%j.%s.%t"
RunTimeRun="runc --root={runc_root} run %n.%u.%j.%s.%t -b %b"
RunTimeKill="runc --root={runc_root} kill -a %n.%u.%j.%s.%t"
RunTimeDelete="runc --root={runc_root} delete --force %n.%u.%j.%s.%t"
"""

# The namespace's first process: munged, then the controller and the node daemon, all
# in the foreground; when any of them ends, so does the namespace and all in it.
SUPERVISOR = """\
munged -F --force --key-file {key} --socket {socket} --pid-file {workdir}/munged.pid \
--log-file {workdir}/munged.log --seed-file {workdir}/munged.seed &
while [ ! -S {socket} ]; do sleep 0.05; done
slurmctld -D -i -f {conf} &
slurmd -D -f {conf} -N {node} &
wait -n
"""


def ensure_installed() -> None:
    """Install Slurm's daemons and client and munge unless they are there."""
    if any(shutil.which(tool) is None for tool in ("slurmctld", "slurmd", "srun", "munged")):
        subprocess.run([str(INSTALLER), *PACKAGES], check=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ModeResult:
    """One way of running jobs through Slurm, timed."""

    mode: str
    jobs: int
    seconds: float
    output: str  # what the jobs wrote on stdout, where the mode collects it

    @property
    def jobs_per_second(self) -> float:
        """Jobs finished per second of wall-clock time."""
        return self.jobs / self.seconds


def container_bundle(unpacked: Path, config: dict[str, Any]) -> Path:
    """Make ``unpacked`` (an image unpacked by umoci: ``rootfs/`` and a config) the bundle
    for ``--container``, with the OCI ``config`` the benches give bare runc, and return it.

    Slurm 22.05 runs the rootfs at ``<bundle>/rootfs`` (a real folder: runc refuses a
    link), and several steps run the bundle at once, so the config names no cgroup of its
    own (runc then makes one per container, named after its id)."""
    config = copy.deepcopy(config)
    config["root"]["path"] = "rootfs"
    config["linux"].pop("cgroupsPath", None)
    (unpacked / "config.json").write_text(json.dumps(config))
    return unpacked


class SlurmRefused(Exception):
    """A mode that Slurm cannot run on this machine; the message says why in one line."""


@dataclass(frozen=True)
class SlurmPeer:
    """A running one-node Slurm: how to call its clients."""

    workdir: Path
    slots: int
    env: dict[str, str]
    namespace_pid: int  # the namespace's first process (seen from outside)

    def client(self, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (``sinfo``, ``srun``, ...) against this cluster,
        inside its PID namespace, so that the clients (``salloc``'s shell, ``srun``s)
        end with the daemons too. They run in the peer's folder, which is the jobs'
        working directory too: whatever a job or step leaves (a core file) goes with it."""
        return subprocess.run(
            ["nsenter", f"--target={self.namespace_pid}", "--pid", "--mount", *argv],
            env=self.env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, cwd=self.workdir)

    def _checked(self, what: str, *argv: str) -> subprocess.CompletedProcess[str]:
        done = self.client(*argv)
        if done.returncode != 0:
            raise SlurmRefused(f"{what} failed ({done.returncode}): "
                               f"{_last_line(done.stderr or done.stdout)}")
        return done

    def steps(self, jobs: int, command: Sequence[str] = ("/bin/true",),
              container: Path | None = None) -> ModeResult:
        """``jobs`` job steps of one core in one allocation holding every slot, ``slots``
        at a time (``srun --exact`` gives each step only its own core), optionally each in
        a ``--container`` of the OCI bundle ``container``."""
        srun = ["srun", "--exact", "-n1", "-c1", "-N1", "--quiet", "--cpu-bind=none"]
        if container is not None:
            srun.append(f"--container={container}")
        launcher = (f"seq {jobs} | xargs -P {self.slots} -I@ "
                    f"{shlex.join([*srun, *command])}")
        started = time.perf_counter()
        done = self._checked("salloc with steps", "salloc", f"-n{self.slots}", "-c1", "-N1",
                             "--quiet", "sh", "-c", launcher)
        mode = "steps in one allocation" + (", --container (runc)" if container else "")
        return ModeResult(mode, jobs, time.perf_counter() - started, done.stdout)

    def array(self, jobs: int, command: Sequence[str] = ("/bin/true",)) -> ModeResult:
        """One ``sbatch --array`` of ``jobs`` one-core tasks, timed from submission until
        the controller lists none of them unfinished (and none failed)."""
        started = time.perf_counter()
        job_id = self._checked(
            "sbatch --array", "sbatch", "--parsable", f"--array=1-{jobs}", "-n1", "-c1",
            "--output=/dev/null", f"--wrap={shlex.join(command)}").stdout.strip().split(";")[0]
        while True:
            states = set(self._checked("squeue", "squeue", "-h", "-r", "-t", "all", "-j",
                                       job_id, "-o", "%T").stdout.split())
            if states - UNFINISHED - {"COMPLETED"}:  # kept MinJobAge seconds: seen here
                raise SlurmRefused(f"array tasks ended {', '.join(sorted(states))}")
            if not states & UNFINISHED:
                break
            time.sleep(POLL)
        return ModeResult("sbatch --array", jobs, time.perf_counter() - started, "")

    def srun_per_job(self, jobs: int, command: Sequence[str] = ("/bin/true",)) -> ModeResult:
        """``jobs`` separate ``srun -n1 -c1`` (each its own allocation), ``slots`` at a time."""
        launcher = (f"seq {jobs} | xargs -P {self.slots} -I@ "
                    f"{shlex.join(['srun', '-n1', '-c1', '-N1', '--quiet', *command])}")
        started = time.perf_counter()
        done = self._checked("srun per job", "sh", "-c", launcher)
        return ModeResult("srun per job", jobs, time.perf_counter() - started, done.stdout)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _write_munge_key(path: Path) -> None:
    """A fresh key for the run (munge wants 1 KiB of random bytes, readable by its user)."""
    path.write_bytes(secrets.token_bytes(1024))
    path.chmod(0o400)


@contextmanager
def slurm(slots: int, queue_depth: int = 10000) -> Iterator[SlurmPeer]:
    """A throwaway one-node Slurm with ``slots`` CPUs on 127.0.0.1, torn down after (its
    daemons, job steps and files)."""
    ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-slurm-"))
    process: subprocess.Popen[bytes] | None = None
    namespace_pid: int | None = None
    try:
        for sub in ("state", "spool", "runc"):
            (workdir / sub).mkdir()
        key, munge_socket, conf = workdir / "munge.key", workdir / "munge.socket", \
            workdir / "slurm.conf"
        _write_munge_key(key)
        conf.write_text(SLURM_CONF.format(
            host=socket.gethostname().split(".")[0], ctld_port=_free_port(),
            slurmd_port=_free_port(), munge_socket=munge_socket, state=workdir / "state",
            spool=workdir / "spool", workdir=workdir, queue_depth=queue_depth,
            max_jobs=max(10000, 4 * queue_depth), max_array=max(1001, queue_depth + 1),
            node=NODE, slots=slots, memory_mb=1024 * slots, partition=PARTITION))
        (workdir / "oci.conf").write_text(OCI_CONF.format(runc_root=workdir / "runc"))
        supervisor = SUPERVISOR.format(key=key, socket=munge_socket, workdir=workdir,
                                       conf=conf, node=NODE)
        log = (workdir / "daemons.log").open("wb")
        process = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL",  # even a bench killed by -9 takes them along
             "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
             "bash", "-c", supervisor], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        env = {key_: value for key_, value in os.environ.items()
               if not key_.startswith("SLURM_")}
        env["SLURM_CONF"] = str(conf)
        namespace_pid = _first_child(process)
        peer = SlurmPeer(workdir, slots, env, namespace_pid)
        _wait_idle(peer, process)
        yield peer
    finally:
        if process is not None:
            _stop(process, namespace_pid)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_idle(peer: SlurmPeer, process: subprocess.Popen[bytes]) -> None:
    """Wait until the node reports IDLE with the slots asked for."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise SystemExit("Slurm's daemons ended while starting: "
                             + _daemon_logs(peer.workdir))
        done = peer.client("sinfo", "-h", "-N", "-n", NODE, "-o", "%T %c", timeout=30)
        if done.returncode == 0 and done.stdout.split() == ["idle", str(peer.slots)]:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"Slurm's node never became idle with {peer.slots} CPUs: "
                             f"{done.stdout.strip() or done.stderr.strip()}; "
                             + _daemon_logs(peer.workdir))
        time.sleep(POLL)


def _daemon_logs(workdir: Path) -> str:
    tails = []
    for name in ("daemons.log", "munged.log", "slurmctld.log", "slurmd.log"):
        path = workdir / name
        if path.exists() and path.read_text(errors="replace").strip():
            tails.append(f"{name}: {_last_line(path.read_text(errors='replace'))}")
    return "; ".join(tails) or "no logs"


def _first_child(process: subprocess.Popen[bytes]) -> int:
    """The pid of ``unshare``'s child: the namespace's first process."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + START_TIMEOUT
    while not (pids := children.read_text().split()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("Slurm's PID namespace did not start")
        time.sleep(0.01)
    return int(pids[0])


def _stop(process: subprocess.Popen[bytes], namespace_pid: int | None) -> None:
    """End the namespace: ``unshare --kill-child`` takes its first process with it, the
    kernel then kills every process left in the namespace, and the first process is gone
    from /proc only once they all are (so their files can be removed after)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 30
    while namespace_pid is not None and Path(f"/proc/{namespace_pid}").exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"Slurm's PID namespace (pid {namespace_pid}) outlived 30 s")
        time.sleep(0.01)
