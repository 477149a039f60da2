"""The parent of an exec: adopts the process ``runc exec --detach`` leaves, and waits.

The agent has runc detach, so that nothing sits between the process and the agent:
the process inherits the agent's pipes, or runc hands the container's terminal
over (``--console-socket``). A detached process is no longer runc's; it goes to the
nearest child subreaper among runc's ancestors: this process, run by the agent as
``python -S -c REAPER_MAIN RUNC ARGS...``. It runs runc, waits for the process
it adopts, and exits with that process's exit code (128+N when signal N killed
it), or 255 when runc failed (runc's message is on stderr), as ``runc exec``
itself does in the foreground.
"""

from __future__ import annotations

import os
import sys

from fuzz.substrate.monitor.syscalls import become_subreaper

REAPER_MAIN = "import sys; from fuzz.substrate.runtime.exec_reaper import main; sys.exit(main())"
RUNC_FAILED = 255


def exit_code(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N for signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def main(argv: list[str] | None = None) -> int:
    """Run ``runc ARGS`` (argv: the runc binary, then its arguments); the exec's exit code."""
    args = sys.argv[1:] if argv is None else argv
    become_subreaper()
    runc = os.posix_spawn(args[0], args, os.environ)
    _, status = os.waitpid(runc, 0)
    if exit_code(status) != 0:
        return RUNC_FAILED
    code = RUNC_FAILED
    while True:  # the adopted process, the only child left
        try:
            _, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return code
        code = exit_code(status)
