"""``fuzz workflow upgrade FILE``: the v4 form of a v1 Fuzzfile (``fuzzball workflow upgrade``)."""

from __future__ import annotations

from pathlib import Path

import click

from fuzz.errors import ConfigError
from fuzz.fsutil import write_atomic
from fuzz.spec.fuzzfile_loader import check_fuzzfile_size
from fuzz.spec.fuzzfile_upgrade import AlreadyV4, upgrade_text
from fuzz.spec.yamlsource import decode_source, read_source


@click.command("upgrade")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the v4 file here (default: print it).")
@click.option("--in-place", "-i", "in_place", is_flag=True,
              help="Replace FILE with its v4 form.")
def workflow_upgrade(file: Path, output: Path | None, in_place: bool) -> None:
    """Write the v4 form of the v1 Fuzzfile FILE: mounts keyed by path, a volume's name
    that repeats its key dropped, all else (comments, order, layout) as written.

    An invalid FILE is refused with its problems (exit 1); a v4 FILE is left alone.
    Files are replaced atomically: a reader sees the old file or the new one.
    """
    if output is not None and in_place:
        raise ConfigError("give -o/--output or --in-place, not both")
    raw = read_source(file, str(file))
    check_fuzzfile_size(len(raw), str(file))
    try:
        upgraded = upgrade_text(decode_source(raw, str(file)), str(file))
    except AlreadyV4 as exc:
        click.echo(str(exc), err=True)
        return
    target = file if in_place else output
    if target is None:
        click.echo(upgraded, nl=False)
        return
    try:
        write_atomic(target, upgraded.encode("utf-8"), mode=_mode_of(file) if in_place else None)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror or exc}") from exc
    click.echo(f"{target}: written in v4", err=True)


def _mode_of(file: Path) -> int:
    """The permission bits of ``file``, kept when it is replaced in place."""
    return file.stat().st_mode & 0o7777


COMMANDS = [workflow_upgrade]
