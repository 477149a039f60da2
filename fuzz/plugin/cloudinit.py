"""The bootstrap script that turns a fresh machine into a fuzz node (cloud-init user-data).

:func:`cloud_init_script` renders one POSIX ``#!/bin/sh`` script per node. Cloud
providers pass it as user-data (AWS), ``startup-script``/``user-data`` metadata
(GCP) or ``custom_data`` (Azure); the Warewulf provider renders it into an overlay.
On the machine it

1. writes the join token and a new random token of the agent's own (both mode
   0600) and, when the cluster has one, the CA;
2. makes sure fuzz is installed: the image's ``fuzz`` (``fuzz_command``) is used
   when present, otherwise ``install`` (a pip requirement or a wheel URL) is
   installed into a virtualenv under ``/opt/fuzz``; with neither it fails, saying so;
3. writes ``agent.sh``, which execs ``fuzz substrate serve`` on the configured
   port, labelled with the node's labels and tags (address, cluster, client token)
   and, when ``join.orchestrator`` is set, joining it (``--join``, the join token,
   ``--node-name`` the node's address, ``--advertise`` the machine's first address
   when the agent binds a wildcard address); with the cluster's CA it enrolls for a
   certificate and serves mutual TLS (``--join-ca-file``), without it plain text
   (``--insecure``);
4. starts it: as the systemd unit ``fuzz-agent.service`` where systemd runs the
   machine, otherwise detached in its own session; then waits until the agent has
   published ``agent.json`` and prints where it listens.

Everything that touches the host can be redirected from the environment, so that
a test can play a new machine on the test host (no VM needed):

``FUZZ_ROOT``           a directory every host path is put under (and no systemd)
``FUZZ_LISTEN``         the agent's ``HOST:PORT`` instead of the configured one
``FUZZ_COMMAND``        the fuzz executable to use instead of ``fuzz_command``
``FUZZ_ADVERTISE``      the ``HOST:PORT`` the orchestrator calls the agent at
``FUZZ_START_TIMEOUT``  seconds to wait for the agent instead of ``start_timeout``

Running it twice is harmless: a live agent on the state dir is left alone.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field

from fuzz.plugin.provider import JoinInfo, NodeRequest

ENV_ROOT = "FUZZ_ROOT"
ENV_LISTEN = "FUZZ_LISTEN"
ENV_COMMAND = "FUZZ_COMMAND"
ENV_ADVERTISE = "FUZZ_ADVERTISE"
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


def _static_args(node: NodeRequest, join: JoinInfo, settings: BootstrapSettings) -> list[str]:
    """The agent's arguments known when the script is rendered: labels, registries, join."""
    args: list[str] = []
    for key, value in sorted({**dict(node.labels), **dict(node.tags)}.items()):
        args += ["--label", f"{key}={value}"]
    if join.orchestrator:
        args += ["--join", join.orchestrator, "--node-name", node.address]
    if not (join.orchestrator and join.ca_pem):
        args += ["--insecure"]  # nothing to enroll with: the agent serves plain text
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
            # a restart replaces the agent alone: the container monitor and its jobs live on
            # and the new agent re-adopts them (the default would kill the whole cgroup)
            "KillMode=process",
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
    join_lines: list[str] = []
    if join.orchestrator:  # join it; tell it where to call the agent when it binds a wildcard
        join_lines = [
            'set -- "$@" --join-token-file "$CONF/join-token"',
            *(['set -- "$@" --join-ca-file "$CONF/ca.pem"'] if join.ca_pem else []),
            'if [ -z "$ADVERTISE" ]; then',
            '    case "$LISTEN" in',
            '        0.0.0.0:*|\\[::\\]:*)',
            '            HOST=$(hostname -I 2>/dev/null | cut -d" " -f1)',
            '            PORT="${LISTEN##*:}"',
            '            if [ -n "$HOST" ] && [ "$PORT" != 0 ]; then ADVERTISE="$HOST:$PORT"; fi',
            "            ;;",
            "    esac",
            "fi",
            'if [ -n "$ADVERTISE" ]; then set -- "$@" --advertise "$ADVERTISE"; fi',
        ]
    static = " ".join(q(arg) for arg in _static_args(node, join, settings))
    lines = [
        "#!/bin/sh",
        f"# fuzz bootstrap for {' '.join(node.address.split())}",
        "# Written by fuzz (fuzz/plugin/cloudinit.py); holds a join token, keep it private.",
        "set -eu",
        "umask 077",
        f'ROOT="${{{ENV_ROOT}:-}}"',
        f'CONF="$ROOT"{q(settings.config_dir)}',
        f'STATE="$ROOT"{q(settings.state_dir)}',
        f'LOG="$ROOT"{q(settings.log_file)}',
        f'LISTEN="${{{ENV_LISTEN}:-{q(settings.listen_host)}:{settings.port}}}"',
        f'TIMEOUT="${{{ENV_START_TIMEOUT}:-{settings.start_timeout}}}"',
        f'FUZZ_BIN="${{{ENV_COMMAND}:-{q(settings.fuzz_command)}}}"',
        f'ADVERTISE="${{{ENV_ADVERTISE}:-}}"',
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
        "# the state dir holds the images jobs run from: traversable by the jobs' user",
        'mkdir -p "$CONF" && (umask 022 && mkdir -p "$STATE" "$(dirname "$LOG")")',
        'if pid=$(agent_pid); then say "agent already running (pid $pid)"; exit 0; fi',
        "",
        "# 1. the join token, the agent's own token (both 0600) and the cluster's CA",
        f"printf '%s\\n' {q(join.token)} > \"$CONF/join-token.tmp\"",
        'mv -f "$CONF/join-token.tmp" "$CONF/join-token"',
        'if [ ! -s "$CONF/agent-token" ]; then',
        "    od -An -N32 -tx1 /dev/urandom | tr -d ' \\n' > \"$CONF/agent-token.tmp\"",
        '    echo >> "$CONF/agent-token.tmp"',
        '    mv -f "$CONF/agent-token.tmp" "$CONF/agent-token"',
        "fi",
        'chmod 600 "$CONF/join-token" "$CONF/agent-token"',
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
        *join_lines,
        "{",
        "    echo '#!/bin/sh'",
        "    echo 'umask 022  # as under systemd: jobs (another user) read the image store'",
        "    printf 'exec %s substrate serve --listen %s --state-dir %s --token-file %s' \\",
        '        "$(shq "$FUZZ_BIN")" "$(shq "$LISTEN")" "$(shq "$STATE")" \\',
        '        "$(shq "$CONF/agent-token")"',
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

