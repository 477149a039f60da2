"""A fake ``wwctl`` (Warewulf 4.6.1+) over :mod:`~tests.support.fakes.fake_warewulf`, for
the baremetal tests.

The test puts a ``wwctl`` shim first on PATH that runs this file with the state
directory in ``FAKE_WAREWULF_STATE``. It answers ``node list [--json]``, ``node add``,
``node set --yes``, ``node delete --yes``, ``overlay build`` and ``power
on|off|status`` in Warewulf's output formats, and refuses what wwctl refuses:
unknown commands and flags (cobra's ``Error: unknown flag``), missing node names,
``node set``/``delete`` without ``--yes`` (wwctl would prompt), unknown profiles,
images and overlays, bad MAC or IP addresses, and every call while ``deny`` exists
(as for a user who may not read nodes.conf).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.fakes.fake_warewulf import FakeWarewulf, WarewulfError

STATE_ENV = "FAKE_WAREWULF_STATE"


class UsageError(Exception):
    """Cobra refuses the command line."""


@dataclass(frozen=True)
class Flag:
    """One flag: its long name, short name, whether it takes a value, whether it repeats."""

    name: str
    short: str | None = None
    value: bool = True
    multi: bool = False
    default: str | None = None


COMMANDS: dict[tuple[str, str], tuple[Flag, ...]] = {
    ("node", "list"): (Flag("json", "j", value=False),),
    ("node", "add"): (Flag("profile", "P", default="default"), Flag("netname", default="default"),
                      Flag("hwaddr", "H"), Flag("ipaddr", "I"), Flag("ipmiaddr"),
                      Flag("image"), Flag("tagadd", multi=True)),
    ("node", "set"): (Flag("yes", "y", value=False), Flag("image"),
                      Flag("system-overlays", "O"), Flag("ipmiaddr"),
                      Flag("tagadd", multi=True), Flag("tagdel", multi=True)),
    ("node", "delete"): (Flag("yes", "y", value=False),),
    ("overlay", "build"): (),
    ("power", "on"): (),
    ("power", "off"): (),
    ("power", "status"): (),
}


def parse(flags: tuple[Flag, ...], args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Cobra-style parsing: ``--name value``, ``--name=value``, ``-s value``, bool flags."""
    by_name = {f"--{f.name}": f for f in flags} | {f"-{f.short}": f for f in flags if f.short}
    options: dict[str, Any] = {f.name: ([] if f.multi else f.default) for f in flags}
    positional: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        flag = by_name.get(name)
        if flag is None:
            if arg.startswith("--"):
                raise UsageError(f"unknown flag: {name}")
            raise UsageError(f"unknown shorthand flag: '{name[1:]}' in {arg}")
        if not flag.value:
            options[flag.name] = True
            continue
        if not eq:
            if not rest:
                raise UsageError(f"flag needs an argument: {name}")
            inline = rest.pop(0)
        if flag.multi:
            options[flag.name].append(inline)
        else:
            options[flag.name] = inline
    return options, positional


def tags_of(values: list[str]) -> dict[str, str]:
    """``--tagadd key=value`` values as a map (cobra's stringToString)."""
    tags = {}
    for value in values:
        key, eq, tag = value.partition("=")
        if not eq or not key:
            raise UsageError(f'invalid argument "{value}" for "--tagadd" flag: '
                             f"{value} must be formatted as key=value")
        tags[key] = tag
    return tags


def run(ww: FakeWarewulf, group: str, verb: str, options: dict[str, Any], names: list[str]
        ) -> None:
    """Carry out one command, printing what wwctl prints."""
    if (group, verb) != ("node", "list") and (group, verb) != ("overlay", "build") and not names:
        raise UsageError("requires at least 1 arg(s), only received 0")
    if group == "node" and verb == "list":
        nodes = {n: f for n, f in ww.nodes().items() if not names or n in names}
        if options["json"]:
            print(json.dumps(nodes, indent=2, sort_keys=True))
        else:
            print(f"{'NODE NAME':<22} {'PROFILES':<26} NETWORK")
            for name, fields in sorted(nodes.items()):
                print(f"{name:<22} {','.join(fields.get('profiles', [])):<26} --")
    elif group == "node" and verb == "add":
        if len(names) != 1:
            raise UsageError(f"accepts 1 arg(s), received {len(names)}")
        fields: dict[str, Any] = {"profiles": [options["profile"]]}
        netdev = {k: options[k] for k in ("hwaddr", "ipaddr") if options[k]}
        if netdev:
            fields["network devices"] = {options["netname"]: netdev}
        if options["ipmiaddr"]:
            fields["ipmi"] = {"ipaddr": options["ipmiaddr"]}
        if options["image"]:
            fields["image name"] = options["image"]
        fields["tags"] = tags_of(options["tagadd"])
        ww.add(names[0], fields)
        print(f"Added node: {names[0]}")
    elif group == "node" and verb in ("set", "delete"):
        if not options["yes"]:
            print(f"Are you sure you want to {'modify' if verb == 'set' else 'delete'} "
                  f"{len(names)} nodes(s): ", end="")
            raise WarewulfError("no confirmation on stdin; pass --yes")
        for name in names:
            if verb == "delete":
                ww.delete(name)
                continue
            update: dict[str, Any] = {"tags": tags_of(options["tagadd"])}
            if options["image"]:
                update["image name"] = options["image"]
            if options["system-overlays"]:
                update["system overlay"] = options["system-overlays"].split(",")
            if options["ipmiaddr"]:
                update["ipmi"] = {"ipaddr": options["ipmiaddr"]}
            ww.update(name, update, tuple(options["tagdel"]))
    elif group == "overlay":
        for name in ww.build_overlays(names):
            print(f"Building system overlay image for {name}")
    elif group == "power":
        power(ww, verb, names)


def power(ww: FakeWarewulf, verb: str, names: list[str]) -> None:
    """``wwctl power``: one line per node, named by its BMC address as ipmitool reports it."""
    known = ww.nodes()
    if not any(n in known for n in names):
        print("No nodes found")
        raise SystemExit(1)
    failed = False
    for name in names:
        if name not in known:
            continue
        try:
            if verb == "status":
                bmc = ww.bmc(name)
                print(f"{bmc}: Chassis Power is {ww.power_state(name)}")
            else:
                bmc = ww.power(name, verb)
                print(f"{bmc}: Chassis Power Control: {'Up/On' if verb == 'on' else 'Down/Off'}")
        except WarewulfError as exc:
            print(f"ERROR  : {name}: {exc}", file=sys.stderr)
            failed = True
    if failed:
        raise SystemExit(1)


def main(argv: list[str]) -> int:
    """Run ``wwctl ARGV``; 0 on success, 1 with Warewulf's or cobra's message otherwise."""
    ww = FakeWarewulf(Path(os.environ[STATE_ENV]))
    command = tuple(argv[:2])
    try:
        if command not in COMMANDS:
            raise UsageError(f'unknown command "{" ".join(argv[:2])}" for "wwctl"')
        options, names = parse(COMMANDS[(argv[0], argv[1])], argv[2:])
        if ww.denied:
            raise WarewulfError("could not open node configuration: open "
                                "/etc/warewulf/nodes.conf: permission denied")
        run(ww, argv[0], argv[1], options, names)
    except UsageError as exc:
        print(f"Error: {exc}\nRun 'wwctl {' '.join(argv[:2])} --help' for usage.",
              file=sys.stderr)
        return 1
    except WarewulfError as exc:
        print(f"ERROR  : {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
