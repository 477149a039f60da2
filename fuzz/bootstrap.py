"""The bootstrap script that turns a fresh machine into a fuzz node (cloud-init user-data).

:func:`cloud_init_script` renders one POSIX ``#!/bin/sh`` script per node. Cloud
providers pass it as user-data (AWS), ``startup-script``/``user-data`` metadata
(GCP) or ``custom_data`` (Azure); the Warewulf provider renders it into an overlay.
On the machine it

1. writes the join token (mode 0600) and, when the cluster has one, the CA;
2. makes sure fuzz is installed: the image's ``fuzz`` (``fuzz_command``) is used
   when present, otherwise ``install`` (a pip requirement or a wheel URL) is
   installed into a virtualenv under ``/opt/fuzz``; with neither it fails, saying so;
3. writes ``agent.sh``, which execs ``fuzz substrate serve`` on the configured
   port, labelled with the node's labels and tags (address, cluster, client token)
   and with the orchestrator's address (label ``fuzz:orchestrator``);
4. starts it: as the systemd unit ``fuzz-agent.service`` where systemd runs the
   machine, otherwise detached in its own session; then waits until the agent has
   published ``agent.json`` and prints where it listens.

Everything that touches the host can be redirected from the environment, so that
a test can play a new machine on the test host (no VM needed):

``FUZZ_ROOT``           a directory every host path is put under (and no systemd)
``FUZZ_LISTEN``         the agent's ``HOST:PORT`` instead of the configured one
``FUZZ_COMMAND``        the fuzz executable to use instead of ``fuzz_command``
``FUZZ_START_TIMEOUT``  seconds to wait for the agent instead of ``start_timeout``

Running it twice is harmless: a live agent on the state dir is left alone.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from fuzz.provider_api import JoinInfo, NodeRequest

TAG_ORCHESTRATOR = "fuzz:orchestrator"
"""The agent label carrying the orchestrator's address from :class:`JoinInfo`."""
ENV_ROOT = "FUZZ_ROOT"
ENV_LISTEN = "FUZZ_LISTEN"
ENV_COMMAND = "FUZZ_COMMAND"
ENV_START_TIMEOUT = "FUZZ_START_TIMEOUT"
UNIT_NAME = "fuzz-agent.service"


class BootstrapSettings(BaseModel):
    """How the bootstrap script installs and starts the agent; embeddable in provider configs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fuzz_command: str = Field(
        default="fuzz", description="The fuzz executable on the image (on PATH or absolute)."
    )
    install: str | None = Field(
        default=None,
        description="A pip requirement or wheel URL installed into /opt/fuzz when the "
        "image has no fuzz_command.",
    )
    listen_host: str = Field(default="0.0.0.0", description="The address the agent binds.")
    port: int = Field(default=7443, ge=0, le=65535, description="The agent's port (0: any).")
    state_dir: str = Field(default="/var/lib/fuzz/agent", description="The agent's state dir.")
    config_dir: str = Field(default="/etc/fuzz", description="Token, CA and agent.sh.")
    log_file: str = Field(
        default="/var/log/fuzz-agent.log", description="The agent's log without systemd."
    )
    insecure_registries: tuple[str, ...] = Field(
        default=(), description="Registries the agent may reach over plain HTTP."
    )
    start_timeout: int = Field(default=120, gt=0, description="Seconds to wait for the agent.")


def agent_labels(node: NodeRequest, join: JoinInfo) -> dict[str, str]:
    """The labels the node's agent reports: pool labels, fuzz tags and the orchestrator."""
    labels = {**dict(node.labels), **dict(node.tags)}
    if join.orchestrator:
        labels[TAG_ORCHESTRATOR] = join.orchestrator
    return labels


def _static_args(node: NodeRequest, join: JoinInfo, settings: BootstrapSettings) -> list[str]:
    """The agent's arguments known when the script is rendered: labels, registries."""
    args: list[str] = []
    for key, value in sorted(agent_labels(node, join).items()):
        args += ["--label", f"{key}={value}"]
    for registry in settings.insecure_registries:
        args += ["--insecure-registry", registry]
    return args


def _systemd_quote(word: str) -> str:
    """Quote one ExecStart word (systemd.service "Command lines": quotes, %, $ and \\)."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("%", "%%").replace("$", "$$") + '"'


def _unit(settings: BootstrapSettings) -> str:
    agent_sh = settings.config_dir.rstrip("/") + "/agent.sh"
    return "\n".join(
        (
            "[Unit]",
            "Description=fuzz node agent",
            "Wants=network-online.target",
            "After=network-online.target",
            "",
            "[Service]",
            f"ExecStart={_systemd_quote(agent_sh)}",
            "Restart=on-failure",
            "RestartSec=2",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        )
    )


def _heredoc(text: str, marker: str) -> Iterator[str]:
    """Lines of a quoted here-document (no expansion) holding ``text``."""
    if any(line == marker for line in text.splitlines()):
        raise ValueError(f"text contains the here-document marker {marker}")
    yield f"<<'{marker}'"
    yield from text.rstrip("\n").splitlines()
    yield marker


def cloud_init_script(node: NodeRequest, join: JoinInfo, settings: BootstrapSettings) -> str:
    """Render the bootstrap script for ``node``: valid cloud-init user-data (``#!/bin/sh``).

    The script carries ``join.token``; treat it as a secret. See the module
    docstring for what it does and the environment variables that redirect it.
    """
    q = shlex.quote
    ca_lines: list[str] = []
    if join.ca_pem:
        ca = list(_heredoc(join.ca_pem, "FUZZ_CA_PEM"))
        ca_lines = [f'cat > "$CONF/ca.pem" {ca[0]}', *ca[1:], 'chmod 644 "$CONF/ca.pem"']
    unit = list(_heredoc(_unit(settings), "FUZZ_AGENT_UNIT"))
    static = " ".join(q(arg) for arg in _static_args(node, join, settings))
    lines = [
        "#!/bin/sh",
        f"# fuzz bootstrap for {' '.join(node.address.split())}",
        "# Written by fuzz (fuzz/bootstrap.py); holds a join token, keep it private.",
        "set -eu",
        "umask 077",
        f'ROOT="${{{ENV_ROOT}:-}}"',
        f'CONF="$ROOT"{q(settings.config_dir)}',
        f'STATE="$ROOT"{q(settings.state_dir)}',
        f'LOG="$ROOT"{q(settings.log_file)}',
        f'LISTEN="${{{ENV_LISTEN}:-{q(settings.listen_host)}:{settings.port}}}"',
        f'TIMEOUT="${{{ENV_START_TIMEOUT}:-{settings.start_timeout}}}"',
        f'FUZZ_BIN="${{{ENV_COMMAND}:-{q(settings.fuzz_command)}}}"',
        f"INSTALL={q(settings.install or '')}",
        "",
        'say() { printf "fuzz-bootstrap: %s\\n" "$*"; }',
        'fail() { printf "fuzz-bootstrap: error: %s\\n" "$*" >&2; exit 1; }',
        "shq() { printf \"'%s'\" \"$(printf '%s' \"$1\" | sed \"s/'/'\\\\\\\\''/g\")\"; }",
        "agent_pid() {",
        '    [ -f "$STATE/agent.json" ] || return 1',
        '    pid=$(sed -n \'s/.*"pid": *\\([0-9][0-9]*\\).*/\\1/p\' "$STATE/agent.json")',
        '    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && printf "%s" "$pid"',
        "}",
        "",
        'mkdir -p "$CONF" "$STATE" "$(dirname "$LOG")"',
        'if pid=$(agent_pid); then say "agent already running (pid $pid)"; exit 0; fi',
        "",
        "# 1. the join token (0600) and the cluster's CA",
        f"printf '%s\\n' {q(join.token)} > \"$CONF/token.tmp\"",
        'chmod 600 "$CONF/token.tmp"',
        'mv -f "$CONF/token.tmp" "$CONF/token"',
        *ca_lines,
        "",
        "# 2. fuzz itself: from the image, or installed into a virtualenv",
        'if ! command -v "$FUZZ_BIN" >/dev/null 2>&1; then',
        '    [ -n "$INSTALL" ] || fail "$FUZZ_BIN is not installed and no install spec is set"',
        '    command -v python3 >/dev/null 2>&1 || fail "python3 is needed to install fuzz"',
        '    say "installing $INSTALL into $ROOT/opt/fuzz"',
        '    python3 -m venv "$ROOT/opt/fuzz"',
        '    "$ROOT/opt/fuzz/bin/python" -m pip install -q "$INSTALL"',
        '    FUZZ_BIN="$ROOT/opt/fuzz/bin/fuzz"',
        "fi",
        'FUZZ_BIN=$(command -v "$FUZZ_BIN")  # absolute: systemd runs agent.sh with its own PATH',
        "",
        "# 3. agent.sh: the agent's command line",
        f"set -- {static}" if static else "set --",
        "{",
        "    echo '#!/bin/sh'",
        "    printf 'exec %s substrate serve --listen %s --state-dir %s --token-file %s' \\",
        '        "$(shq "$FUZZ_BIN")" "$(shq "$LISTEN")" "$(shq "$STATE")" "$(shq "$CONF/token")"',
        '    for arg in "$@"; do printf \' %s\' "$(shq "$arg")"; done',
        "    echo",
        '} > "$CONF/agent.sh.tmp"',
        'chmod 700 "$CONF/agent.sh.tmp"',
        'mv -f "$CONF/agent.sh.tmp" "$CONF/agent.sh"',
        "",
        "# 4. start it: a systemd unit on a real machine, else a detached process",
        'BG=""',
        'if [ -z "$ROOT" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then',
        f"    cat > /etc/systemd/system/{UNIT_NAME} {unit[0]}",
        *unit[1:],
        "    systemctl daemon-reload",
        f"    systemctl enable --now {UNIT_NAME}",
        f'    WHERE="journalctl -u {UNIT_NAME}"',
        "else",
        '    if command -v setsid >/dev/null; then DETACH=setsid; else DETACH=""; fi',
        '    $DETACH "$CONF/agent.sh" >>"$LOG" 2>&1 </dev/null &',
        "    BG=$!",
        '    WHERE="$LOG"',
        "fi",
        "waited=0",
        "until pid=$(agent_pid); do",
        '    if [ -n "$BG" ] && ! kill -0 "$BG" 2>/dev/null; then',
        '        fail "the agent exited while starting: $(tail -n 5 "$LOG" | tr "\\n" " ")"',
        "    fi",
        '    [ "$waited" -lt "$((TIMEOUT * 10))" ] || '
        'fail "the agent did not start within ${TIMEOUT}s; see $WHERE"',
        "    sleep 0.1",
        "    waited=$((waited + 1))",
        "done",
        'say "agent running (pid $pid): $(cat "$STATE/agent.json" | tr -d "\\n ")"',
        "",
    ]
    return "\n".join(lines)

