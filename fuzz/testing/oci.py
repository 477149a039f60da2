"""Real OCI parts for tests and benchmarks: a local registry and a busybox image.

:func:`serve_registry` runs Debian's ``docker-registry`` on 127.0.0.1 (with
htpasswd auth when asked); :func:`build_busybox_layout` builds an OCI image from
``busybox-static`` with umoci (its root filesystem filled by :func:`fill_busybox_rootfs`,
which SIF images for tests use too), and :func:`push_layout` pushes it with skopeo.
A missing tool raises :class:`MissingPartError` with the apt-get line that installs it.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
BUSYBOX = Path("/bin/busybox")
AUTH_USER = "fuzz"
AUTH_PASSWORD = "pw-Zq8r1xVt-not-a-secret"
START_TIMEOUT = 15.0
MARKER_HEADER = "X-Fuzz-Registry"  # every answer of a registry we started carries its marker
APPLETS = (
    "sh", "true", "false", "cat", "echo", "nproc", "id", "env", "pwd", "sleep", "ls",
    "httpd", "dd", "head", "grep", "wc", "mount", "printf", "test", "mkdir", "rm", "touch",
    "hostname", "ps", "kill", "uname", "tail", "sync", "stat", "wget", "nc", "date",
    "tar", "gzip", "gunzip", "seq", "expr", "basename", "cut", "sort", "tr", "sha256sum",
    "stty",
)  # fmt: skip
BUSYBOX_REPO = "fuzz/busybox"


class MissingPartError(RuntimeError):
    """A real part (a Debian package, a library) is missing or failed; says what to install."""


@dataclass(frozen=True)
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; credentials when it has auth.

    ``marker`` is the random value of the ``X-Fuzz-Registry`` header on its every answer:
    what tells it from another registry on the same port.
    """

    host: str
    storage: Path
    log: Path
    marker: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class PushedImage:
    """An image in a test registry: ``reference`` is ``docker://HOST/REPO:TAG``."""

    reference: str
    digest: str
    registry: Registry

    @property
    def by_digest(self) -> str:
        """The same image as ``docker://HOST/REPO@DIGEST``."""
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


def require(path: Path | str, package: str) -> str:
    """The program at ``path`` (or on PATH), failing the test with how to install it."""
    found = str(path) if Path(path).is_absolute() and os.access(path, os.X_OK) else None
    found = found or shutil.which(str(path))
    if found is None:
        raise MissingPartError(f"{path} is missing: apt-get install {package}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash of ``password`` from the system's libcrypt (libxcrypt)."""
    try:
        lib = ctypes.CDLL("libcrypt.so.1")
    except OSError as exc:
        raise MissingPartError(
            f"libcrypt.so.1 is missing ({exc}): apt-get install libcrypt1") from exc
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)  # cost 5: quick, tests only
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise MissingPartError(
            "libcrypt cannot make bcrypt hashes; the htpasswd registry needs them")
    return str(hashed.decode())


def _answers(host: str, marker: str) -> bool:
    """True once ``GET /v2/`` is answered (401 included) with our registry's ``marker``.

    A status code alone would take any registry already on the port for ours.
    """
    conn = http.client.HTTPConnection(host, timeout=1.0)
    try:
        conn.request("GET", "/v2/")
        reply = conn.getresponse()
        return reply.status in (200, 401) and reply.getheader(MARKER_HEADER) == marker
    except OSError:
        return False
    finally:
        conn.close()


def _failed_start(host: str, log: Path) -> MissingPartError:
    """Why docker-registry did not come up on ``host``, from its log."""
    text = log.read_text(errors="replace")
    if "address already in use" in text:
        return MissingPartError(f"docker-registry cannot listen on {host}: {host} is in use "
                                "by another process")
    return MissingPartError(f"docker-registry did not start on {host}:\n{text[-2000:]}")


@contextmanager
def serve_registry(
    workdir: Path, auth: tuple[str, str] | None = None, port: int | None = None
) -> Iterator[Registry]:
    """Run docker-registry on 127.0.0.1 (``port``, else a free one) while in the block.

    Its storage is ``workdir/storage`` (kept, so a later run serves the same images).
    """
    binary = require(REGISTRY_BINARY, "docker-registry")
    host = f"127.0.0.1:{port or free_port()}"
    marker = secrets.token_hex(16)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: {host}",
        "  secret: fuzz-tests-only",
        "  headers:",
        f"    {MARKER_HEADER}: [{marker}]",
    ]
    if auth is not None:
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(f"{auth[0]}:{bcrypt_hash(auth[1])}\n")
        lines += ["auth:", "  htpasswd:", "    realm: fuzz-tests", f"    path: {htpasswd}"]
    config = workdir / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(host, marker):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise _failed_start(host, log)
            time.sleep(0.05)
        user, password = auth if auth is not None else (None, None)
        yield Registry(host, storage, log, marker, user, password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_checked(argv: list[str]) -> None:
    """Run a tool; a failure raises MissingPartError quoting its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MissingPartError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")


def fill_busybox_rootfs(rootfs: Path, extra_files: Mapping[str, bytes] | None = None) -> None:
    """Put busybox-static, its applet links, /etc/passwd and ``extra_files`` (path in the
    image -> content; a ``#!`` script or an ELF file is made executable) into the
    directory ``rootfs`` (made if missing)."""
    busybox = require(BUSYBOX, "busybox-static")
    for directory in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (rootfs / directory).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    os.chmod(rootfs / "bin" / "busybox", 0o755)
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for name, content in (extra_files or {}).items():
        target = rootfs / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        if content.startswith((b"#!", b"\x7fELF")):  # a script or a program: executable
            target.chmod(0o755)


def build_busybox_layout(workdir: Path, extra_files: Mapping[str, bytes] | None = None) -> Path:
    """An OCI layout (tag ``latest``) of busybox-static with applet links; returns its path.

    ``extra_files`` (path in the image -> content) makes images of other digests.
    """
    umoci = require("umoci", "umoci")
    layout, bundle = workdir / "oci", workdir / "bundle"
    image = f"{layout}:latest"
    run_checked([umoci, "init", "--layout", str(layout)])
    run_checked([umoci, "new", "--image", image])
    run_checked([umoci, "unpack", "--rootless", "--image", image, str(bundle)])
    fill_busybox_rootfs(bundle / "rootfs", extra_files)
    run_checked([umoci, "repack", "--image", image, str(bundle)])
    run_checked(
        [
            umoci, "config", "--image", image, "--config.cmd", "/bin/sh",
            "--config.env", "PATH=/bin", "--config.workingdir", "/",
        ]
    )  # fmt: skip
    return layout


def push_layout(
    layout: Path, registry: Registry, repository: str, tag: str = "latest"
) -> PushedImage:
    """Copy the layout's ``latest`` to ``registry`` as ``repository:tag`` with skopeo."""
    skopeo = require("skopeo", "skopeo")
    digestfile = layout.parent / f"digest-{registry.host.replace(':', '-')}-{tag}"
    argv = [skopeo, "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", str(digestfile)]
    if registry.username is not None:
        argv += ["--dest-creds", f"{registry.username}:{registry.password}"]
    reference = f"docker://{registry.host}/{repository}:{tag}"
    run_checked([*argv, f"oci:{layout}:latest", reference])
    return PushedImage(reference, digestfile.read_text().strip(), registry)
