"""How the long-running processes (orchestrator, node agent) report: through ``logging`` only.

Each daemon calls :func:`configure_daemon_logging` once at start; its modules then log
through ``logging.getLogger(__name__)`` and never print. Records go to stderr, one line
each, stamped and named, so that a service manager's journal or a redirected log file
shows when and where each came from. The container monitor helper imports only the
standard library and sets up the same format itself (see
:mod:`fuzz.substrate.monitor`).
"""

from __future__ import annotations

import logging
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""One line per record: ``2026-01-02 03:04:05,678 WARNING fuzz.orchestrate.server: …``."""


def configure_daemon_logging(level: int = logging.INFO) -> None:
    """Send this process's log records at ``level`` and above to stderr, in :data:`LOG_FORMAT`.

    Does nothing when the root logger has handlers already (an embedding program or
    a test harness set up logging its own way).
    """
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
