"""End to end: a job that swaps files and directories of a persistent volume for symlinks
cannot make another workflow's egress or ingress of that volume leave the volume.

The attacker's job (a real busybox container) loops until the test stops it, replacing a file and a
parent directory of its persistent volume by relative symlinks that lead, seen from the
orchestrator host, to the orchestrator's data dir (admin token, CA key, master key) and to
a directory outside. Meanwhile other workflows of the same owner egress files and trees of
that volume to a host path and ingress files into it, hundreds of times in all. Not one byte
of the data dir's secrets may reach the host path, and not one file may appear outside.

A job of another workflow waits while a transfer copies into its persistent volume: the
transfer's source is a download this module holds open, so it runs for as long as the test
needs to watch the job wait, however slow the machine.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fuzz.testing.oci import PushedImage, free_port
from fuzz.testing.web import serve_handler
from tests.support.orchestratorutil import wait_until
from tests.support.workflowutil import (
    FIRST_OWNER_ID,
    LocalCluster,
    dump,
    local_cluster,
    safe_host_root,
)

ATTACK_SECONDS = 40  # at least; the attacker swaps until the test puts STOP in the volume
STOP = "stop"
ROUNDS = 40  # egress entries of each kind, per run of the egress workflow
INGRESSES = 100
HELD_SIZE = 1024**2  # the held download's length
HELD_FIRST = 64 * 1024  # what it sends before it waits to be released
HELD_TRICKLE = 1.0  # seconds between the bytes it sends meanwhile (the ingress's read timeout)
WATCH_SECONDS = 5.0  # how long the job is watched waiting, once seen waiting


class HeldDownload(http.server.BaseHTTPRequestHandler):
    """An HTTP download that sends its first bytes, then only a byte now and then (below any
    read timeout) until ``release`` is set: an ingress from it stays RUNNING for exactly as
    long as a test wants."""

    def __init__(self, release: threading.Event, *args: Any) -> None:
        self.release = release
        super().__init__(*args)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(HELD_SIZE))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(bytes(HELD_FIRST))
            sent = HELD_FIRST
            while not self.release.wait(HELD_TRICKLE) and sent < HELD_SIZE - 1:
                self.wfile.write(b"\0")
                sent += 1
            self.wfile.write(bytes(HELD_SIZE - sent))

    def log_message(self, *_: object) -> None:
        pass


@dataclass(frozen=True)
class Held:
    """A served :class:`HeldDownload`: its URL and what releases it."""

    url: str
    release: threading.Event


@pytest.fixture(scope="module")
def held_download() -> Iterator[Held]:
    """A :class:`HeldDownload` on 127.0.0.1, released at the latest when the module is done."""
    release = threading.Event()
    with serve_handler(functools.partial(HeldDownload, release)) as port:
        try:
            yield Held(f"http://127.0.0.1:{port}/big", release)
        finally:
            release.set()


@pytest.fixture(scope="module")
def host_root() -> Iterator[Path]:
    """The cluster's one host path, owned by root and not under /tmp."""
    with safe_host_root() as root:
        yield root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_image: PushedImage,
            host_root: Path, held_download: Held) -> Iterator[LocalCluster]:
    """Two local nodes and their orchestrator, whose workflows may use ``host_root`` and
    ingress ``held_download`` (on loopback: the admin allows it)."""
    directory = tmp_path_factory.mktemp("cluster")
    os.chmod(directory, 0o755)  # jobs run as nobody; volumes live under it
    allow = [held_download.url.removeprefix("http://").removesuffix("/big")]
    with local_cluster(directory, [busybox_image.registry.host], free_port(),
                       host_paths=[str(host_root)],
                       orchestrator={"ingress": {"allow": allow}}) as running:
        yield running


def attacker(image: str, to_data_dir: str, to_outside: str) -> str:
    """A job that swaps ``secret.txt``, ``dir`` and ``drop`` for symlinks, over and over,
    until the volume holds ``STOP``."""
    return f"""\
version: v1
volumes:
  v: {{reference: volume://user/persistent/race}}
jobs:
  swap:
    image: {{uri: {image}}}
    mounts: {{v: {{location: /vol}}}}
    script: |
      cd /vol
      while [ ! -e {STOP} ]; do
        echo harmless > f.new; mv -f f.new secret.txt
        ln -sfn {to_data_dir}/admin.token secret.txt
        rm -rf dir; mkdir dir; echo harmless > dir/admin.token; echo harmless > dir/ca.key
        rm -rf dir; ln -s {to_data_dir} dir
        rm -rf drop; mkdir drop
        rm -rf drop; ln -s {to_outside} drop
      done
"""


def egress_workflow(image: str, out: Path, run: int) -> str:
    """Egress of a file, a file under a directory, and a directory, ROUNDS times each."""
    moves = []
    for n in range(ROUNDS):
        for kind, source in (("f", "secret.txt"), ("p", "dir/admin.token"), ("t", "dir")):
            target = f"{out}/{run}/{kind}{n}" + ("/" if kind == "t" else "")
            moves.append(f"      - source: {{uri: file://{source}}}\n"
                         f"        destination: {{uri: file://{target}}}\n")
    return f"""\
version: v1
volumes:
  v:
    reference: volume://user/persistent/race
    egress:
{"".join(moves)}jobs:
  touch:
    image: {{uri: {image}}}
    command: ["true"]
    mounts: {{v: {{location: /vol}}}}
"""


def ingress_workflow(image: str, source: Path) -> str:
    """INGRESSES copies of a host file into ``drop/`` of the volume."""
    moves = "".join(f"      - source: {{uri: file://{source}}}\n"
                    f"        destination: {{uri: file://drop/x{n}}}\n"
                    for n in range(INGRESSES))
    return f"""\
version: v1
volumes:
  v:
    reference: volume://user/persistent/race
    ingress:
{moves}jobs:
  touch:
    image: {{uri: {image}}}
    command: ["true"]
    mounts: {{v: {{location: /vol}}}}
"""


def secrets_of(data_dir: Path) -> dict[str, bytes]:
    """What must never leave the data dir: the admin token, the CA key, the master key."""
    return {name: (data_dir / name).read_bytes().strip()
            for name in ("admin.token", "ca.key", "master.key")}


def leaks(root: Path, secrets: dict[str, bytes]) -> list[str]:
    """Every file under ``root`` holding one of ``secrets``, and every symlink there."""
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            if stat.S_ISLNK(path.lstat().st_mode):
                found.append(f"{path}: a symlink")
                continue
            data = path.read_bytes()
            found += [f"{path}: {what}" for what, secret in secrets.items() if secret in data]
    return found


def test_symlink_swaps_in_a_volume_never_lead_a_transfer_out(
        cluster: LocalCluster, busybox_image: PushedImage, host_root: Path) -> None:
    image = busybox_image.reference
    volume = cluster.volume_root / "persistent" / "admin" / "race"
    outside = cluster.directory / "outside"
    outside.mkdir()
    # the owner's own subtree of the host path, with a file to ingress
    mine = host_root / "admin"
    mine.mkdir(mode=0o700)
    source = mine / "src.txt"
    source.write_bytes(b"ingressed\n")
    for path in (mine, source):
        os.chown(path, FIRST_OWNER_ID, FIRST_OWNER_ID)
    out = mine / "out"
    secrets = secrets_of(cluster.data_dir)
    data_files_before = set(os.listdir(cluster.data_dir))

    cluster.start("attacker", attacker(image, os.path.relpath(cluster.data_dir, volume),
                                       os.path.relpath(outside, volume)))
    cluster.wait_for("attacker", "swap", "RUNNING")
    attack_ends = time.monotonic() + ATTACK_SECONDS
    stop = volume / STOP  # the attack ends once it has lasted and a transfer waited for it
    cluster.start("ingress", ingress_workflow(image, source))
    egress_runs, waited = 0, False
    try:
        while True:
            cluster.start("egress", egress_workflow(image, out, egress_runs))
            deadline = time.monotonic() + 300
            while (status := cluster.status("egress"))["state"] not in ("SUCCEEDED", "FAILED"):
                transfers = [t for v in status["volumes"] for t in v["transfers"]]
                waited = waited or any(t.get("waiting_for") for t in transfers)
                if waited and time.monotonic() > attack_ends:
                    stop.touch()
                assert time.monotonic() < deadline, dump(status)
                time.sleep(0.3)
            egress_runs += 1
            if stop.exists():
                break
            assert time.monotonic() < attack_ends + 300, "no transfer waited for the attacker"
    finally:
        with contextlib.suppress(FileNotFoundError):
            stop.touch()
    assert cluster.wait("attacker", timeout=120)["state"] == "SUCCEEDED"
    cluster.wait("ingress", timeout=300)

    assert leaks(host_root, secrets) == []
    assert sorted(os.listdir(outside)) == []
    assert set(os.listdir(cluster.data_dir)) - data_files_before <= {"volumes"}
    assert all(os.stat(cluster.data_dir / name).st_uid == 0 for name in secrets)
    # the egress of this owner's volume waited while another workflow's job mounted it
    assert waited, "no transfer waited for the attacker's job"
    assert egress_runs * ROUNDS * 3 + INGRESSES >= 200


def test_a_job_waits_while_another_workflows_transfer_copies_its_persistent_volume(
        cluster: LocalCluster, busybox_image: PushedImage, held_download: Held) -> None:
    image = busybox_image.reference
    cluster.start("filler", f"""\
version: v1
volumes:
  v:
    reference: volume://user/persistent/shared
    ingress:
      - {{source: {{uri: {held_download.url}}}, destination: {{uri: file://big}}}}
jobs:
  done: {{image: {{uri: {image}}}, command: ["true"], mounts: {{v: {{location: /vol}}}}}}
""")

    def transfer() -> str:
        return str(cluster.status("filler")["volumes"][0]["transfers"][0]["state"])

    waiting = "QUEUED: waiting for a transfer of workflow admin.filler.1 to this persistent volume"
    seen: set[str] = set()

    def reader_seen() -> bool:
        """Note the reader's state; the transfer is held, so it must still run after."""
        task = cluster.status("reader")["tasks"][0]
        assert transfer() == "RUNNING", "the held transfer ended before it was released"
        seen.add(f"{task['state']}: {task['waiting_for']}")
        return waiting in seen

    try:
        wait_until("the filler's transfer to run", lambda: transfer() == "RUNNING", 120)
        cluster.start("reader", f"""\
version: v1
volumes:
  v: {{reference: volume://user/persistent/shared}}
jobs:
  look: {{image: {{uri: {image}}}, command: [ls, /vol], mounts: {{v: {{location: /vol}}}}}}
""")
        wait_until("the reader to wait for the filler's transfer", reader_seen, 120)
        watched_until = time.monotonic() + WATCH_SECONDS  # and it keeps waiting
        while time.monotonic() < watched_until:
            reader_seen()
    finally:
        held_download.release.set()
    assert not any(state.startswith(("STARTING", "RUNNING", "SUCCEEDED")) for state in seen), seen
    assert cluster.wait("reader")["state"] == "SUCCEEDED"
    filler = cluster.wait("filler")
    assert filler["state"] == "SUCCEEDED", dump(filler)
    assert int(filler["volumes"][0]["transfers"][0]["bytes_done"]) == HELD_SIZE
