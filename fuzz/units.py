"""Parse the human units used in specs and on the command line: durations and sizes."""

from __future__ import annotations

import math
import re
import time
from decimal import Decimal

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
    "p": 1000**5, "pb": 1000**5, "pi": 1024**5, "pib": 1024**5,
}


def parse_duration(text: str | int | float) -> float:
    """Return seconds for ``30s``, ``10m``, ``1h30m``, ``250ms`` or a bare number of seconds.

    Raises ValueError with a message naming the accepted forms.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m")
    if isinstance(text, int | float):
        if not math.isfinite(text):
            raise ValueError(f"invalid duration {text!r}: must be a finite number")
        if text < 0:
            raise ValueError(f"invalid duration {text!r}: must not be negative")
        return float(text)
    value = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value)
    else:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m")
        seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {text!r}: too large")
    return seconds


def parse_size(text: str | int | float) -> int:
    """Return bytes for ``12GB``, ``512MiB``, ``1.5G`` or a bare number of bytes.

    Decimal suffixes (KB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB) of 1024.
    Fractions are computed exactly and a fraction of a byte is dropped
    (``8.2MB`` is 8200000, ``0.57KiB`` is 583). A float must be a whole number.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"invalid size {text!r}: use e.g. 512MiB, 12GB")
    if isinstance(text, float):
        if not text.is_integer():
            raise ValueError(f"invalid size {text!r}: must be a whole number of bytes")
        text = int(text)
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"invalid size {text!r}: must not be negative")
        return text
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use e.g. 512MiB, 12GB")
    number, unit = match.group(1), (match.group(2) or "").lower()
    return int(Decimal(number) * _SIZE_FACTORS[unit])


def format_bytes(amount: int) -> str:
    """``8589934592`` -> ``8.0 GiB`` (binary units, one decimal; plain bytes below 1 KiB)."""
    if amount < 1024:
        return f"{amount} B"
    value = amount / 1024
    units = ["KiB", "MiB", "GiB", "TiB", "PiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}"


def utc(moment: float) -> str:
    """A unix time as people read it in messages."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moment))
