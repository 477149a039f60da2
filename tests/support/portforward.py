"""A running ``fuzz workflow port-forward --json`` as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time

from tests.support.cliutil import fuzz_command
from tests.support.workflowutil import LocalCluster


class Forward:
    """A running ``fuzz workflow port-forward --json``: its local port and its events."""

    def __init__(self, cluster: LocalCluster, name: str, task: str, remote_port: int) -> None:
        """Forward a free local port to ``remote_port`` of workflow ``name``'s ``task``;
        wait for the line that says where it listens."""
        self.process = subprocess.Popen(
            fuzz_command("workflow", "port-forward", name, task, f"0:{remote_port}", "--json"),
            cwd=cluster.directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        first = self.events(1)[0]
        assert first["event"] == "listening" and str(first["address"]).startswith("127.0.0.1:")
        self.port = int(str(first["address"]).rpartition(":")[2])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def events(self, count: int, timeout: float = 60) -> list[dict[str, object]]:
        """The next ``count`` events it prints."""
        found: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"port-forward printed only {found}; "
                                     f"exit {self.process.poll()}") from None
            found.append(json.loads(line))
        return found

    def stop(self, interrupt: bool = True) -> tuple[int, str]:
        """Ctrl-C it (unless it was already) and wait for its end: its exit code and the
        events it printed since."""
        if interrupt:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return self.process.returncode, "".join(rest) + self.process.stderr.read()
