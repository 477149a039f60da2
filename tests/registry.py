"""Real container registries and a real busybox image for tests.

``registry`` and ``auth_registry`` are Debian's ``docker-registry`` on 127.0.0.1
(the second with htpasswd auth); ``busybox_image`` / ``auth_busybox_image`` are an
OCI image built from ``busybox-static`` with umoci and pushed there with skopeo.
Missing tools fail the fixture with the apt-get line that installs them.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
BUSYBOX = Path("/bin/busybox")
AUTH_USER = "fuzz"
AUTH_PASSWORD = "pw-Zq8r1xVt-not-a-secret"
START_TIMEOUT = 15.0
APPLETS = (
    "sh", "true", "false", "cat", "echo", "nproc", "id", "env", "pwd", "sleep", "ls",
    "httpd", "dd", "head", "grep", "wc", "mount", "printf", "test", "mkdir", "rm", "touch",
    "hostname", "ps", "kill", "uname", "tail", "sync", "stat", "wget", "nc", "date",
)  # fmt: skip
BUSYBOX_REPO = "fuzz/busybox"


@dataclass(frozen=True)
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; credentials when it has auth."""

    host: str
    storage: Path
    log: Path
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
        pytest.fail(f"{path} is missing: apt-get install {package}")
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
        pytest.fail(f"libcrypt.so.1 is missing ({exc}): apt-get install libcrypt1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)  # cost 5: quick, tests only
    hashed = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        pytest.fail("libcrypt cannot make bcrypt hashes; the htpasswd registry needs them")
    return str(hashed.decode())


def _answers(host: str) -> bool:
    """True once ``GET /v2/`` gets any HTTP answer (401 included)."""
    conn = http.client.HTTPConnection(host, timeout=1.0)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status in (200, 401)
    except OSError:
        return False
    finally:
        conn.close()


def _serve(workdir: Path, auth: tuple[str, str] | None) -> Iterator[Registry]:
    """Run docker-registry with its storage in ``workdir`` until the generator closes."""
    binary = require(REGISTRY_BINARY, "docker-registry")
    host = f"127.0.0.1:{free_port()}"
    storage = workdir / "storage"
    storage.mkdir()
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
        while not _answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start on {host}:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        user, password = auth if auth is not None else (None, None)
        yield Registry(host, storage, log, user, password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An anonymous docker-registry on 127.0.0.1 for the whole session."""
    yield from _serve(tmp_path_factory.mktemp("registry"), None)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 that wants ``AUTH_USER``/``AUTH_PASSWORD`` (htpasswd)."""
    yield from _serve(tmp_path_factory.mktemp("auth-registry"), (AUTH_USER, AUTH_PASSWORD))


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")


def build_busybox_layout(workdir: Path, extra_files: Mapping[str, bytes] | None = None) -> Path:
    """An OCI layout (tag ``latest``) of busybox-static with applet links; returns its path.

    ``extra_files`` (path in the image -> content) makes images of other digests.
    """
    busybox = require(BUSYBOX, "busybox-static")
    umoci = require("umoci", "umoci")
    layout, bundle = workdir / "oci", workdir / "bundle"
    image = f"{layout}:latest"
    _run([umoci, "init", "--layout", str(layout)])
    _run([umoci, "new", "--image", image])
    _run([umoci, "unpack", "--rootless", "--image", image, str(bundle)])
    rootfs = bundle / "rootfs"
    for directory in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (rootfs / directory).mkdir(exist_ok=True)
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
    _run([umoci, "repack", "--image", image, str(bundle)])
    _run(
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
    _run([*argv, f"oci:{layout}:latest", reference])
    return PushedImage(reference, digestfile.read_text().strip(), registry)


@pytest.fixture(scope="session")
def busybox_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox OCI layout, built once per session."""
    return build_busybox_layout(tmp_path_factory.mktemp("busybox-image"))


@pytest.fixture(scope="session")
def busybox_image(busybox_layout: Path, registry: Registry) -> PushedImage:
    """``docker://HOST/fuzz/busybox:latest`` in the anonymous ``registry``."""
    return push_layout(busybox_layout, registry, BUSYBOX_REPO)


@pytest.fixture(scope="session")
def auth_busybox_image(busybox_layout: Path, auth_registry: Registry) -> PushedImage:
    """The same busybox image in ``auth_registry`` (pull it with the registry's credentials)."""
    return push_layout(busybox_layout, auth_registry, BUSYBOX_REPO)
