"""The OpenSSH peer: ``sshd`` with ``ssh -N -L`` and ``ssh HOST cmd``, on loopback.

Installs Debian's openssh-server and openssh-client on first use (through
``scripts/install-system-packages.sh``, as the Makefile installs the project's
packages), runs ``sshd`` in the foreground with a configuration, host key and client
key written for the run into a temporary folder, and stops it after. Optionally
everything runs in another network namespace (a job's), so that ``ssh -L`` reaches
the same ``127.0.0.1`` ports that fuzz's port-forward reaches. The cipher is
aes128-gcm, OpenSSH's fastest on AES-NI machines; ``ssh -L``'s figures come from the
same run as fuzz's.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("openssh-server", "openssh-client")
CIPHER = "aes128-gcm@openssh.com"
SSHD = "/usr/sbin/sshd"
INSTALLER = Path(__file__).resolve().parents[2] / "scripts" / "install-system-packages.sh"
SSHD_CONFIG = """\
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile none
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UseDNS no
PrintMotd no
AllowTcpForwarding yes
Ciphers {cipher}
LogLevel ERROR
"""


def ensure_installed() -> None:
    """Install OpenSSH's server and client unless they are there."""
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        subprocess.run([str(INSTALLER), *PACKAGES], check=True)


def _in_netns(pid: int | None) -> list[str]:
    return [] if pid is None else ["nsenter", f"--net=/proc/{pid}/ns/net"]


def _wait_for_port(port: int, pid: int | None, what: str, timeout: float = 30) -> None:
    """Wait until 127.0.0.1:``port`` accepts (in ``pid``'s network namespace)."""
    probe = ["python3", "-c", "import socket,sys; socket.create_connection("
             "('127.0.0.1', int(sys.argv[1])), 1).close()", str(port)]
    deadline = time.monotonic() + timeout
    while subprocess.run([*_in_netns(pid), *probe], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} never listened on 127.0.0.1:{port}")
        time.sleep(0.2)


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice; in a job's namespace only the
    job's own ports are taken, and the bench knows them)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class SshPeer:
    """A running sshd: how to call it."""

    port: int
    key: Path
    netns_pid: int | None
    pid: int  # sshd's (its sessions are its children)

    def ssh(self, *args: str) -> list[str]:
        """The argv of ``ssh`` to this sshd as root with ``args`` (options, then a command)."""
        return [*_in_netns(self.netns_pid), "ssh", "-F", "/dev/null", "-i", str(self.key),
                "-p", str(self.port), "-c", CIPHER, "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", *args]

    @contextmanager
    def forward(self, remote: int) -> Iterator[tuple[int, int]]:
        """``ssh -N -L`` from a free local port to ``127.0.0.1:remote``; yields the port and
        the ssh client's pid."""
        local = free_port()
        process = subprocess.Popen(self.ssh("-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{remote}",
                                            "root@127.0.0.1"))
        try:
            _wait_for_port(local, self.netns_pid, "ssh -L")
            yield local, process.pid
        finally:
            process.terminate()
            process.wait()


@contextmanager
def sshd(netns_pid: int | None = None) -> Iterator[SshPeer]:
    """A throwaway sshd on 127.0.0.1 (in ``netns_pid``'s network namespace), stopped and
    its files removed after."""
    ensure_installed()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    workdir = Path(tempfile.mkdtemp(prefix="fuzz-bench-sshd-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                            str(workdir / name)], check=True)
        shutil.copy(workdir / "client.pub", workdir / "authorized_keys")
        port = free_port()
        config = workdir / "sshd_config"
        config.write_text(SSHD_CONFIG.format(port=port, host_key=workdir / "host",
                                             authorized=workdir / "authorized_keys",
                                             cipher=CIPHER))
        process = subprocess.Popen([*_in_netns(netns_pid), SSHD, "-D", "-e", "-f", str(config)])
        _wait_for_port(port, netns_pid, "sshd")
        yield SshPeer(port, workdir / "client", netns_pid, process.pid)
    finally:
        if process is not None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
