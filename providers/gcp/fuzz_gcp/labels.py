"""fuzz's tags as Compute Engine labels, and back.

Label keys and values may hold only lowercase letters, digits, ``_`` and ``-``, at
most 63 characters each. fuzz's tags become labels like this:

- the keys ``fuzz:cluster``, ``fuzz:address``, ``fuzz:client-token`` become
  ``fuzz-cluster``, ``fuzz-address``, ``fuzz-client-token``; the provider block's
  name goes in ``fuzz-provider``;
- in a value, lowercase letters, digits and ``-`` stay; every other character
  becomes ``_`` and two hex digits per UTF-8 byte (``.`` → ``_2e``, ``_`` → ``_5f``,
  ``A`` → ``_41``), so ``pool.cpu.node[3]`` is ``pool_2ecpu_2enode_5b3_5d``;
- a value longer than 63 characters once encoded continues in ``KEY-2``,
  ``KEY-3``, … .

Cluster names and engine client tokens (hex) are already valid, so they read the
same in the console and in label filters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fuzz.errors import ConfigError
from fuzz.plugin.provider import TAG_ADDRESS, TAG_CLIENT_TOKEN, TAG_CLUSTER

LABEL_CLUSTER = "fuzz-cluster"
LABEL_ADDRESS = "fuzz-address"
LABEL_CLIENT_TOKEN = "fuzz-client-token"
LABEL_PROVIDER = "fuzz-provider"
TAG_LABELS = {TAG_CLUSTER: LABEL_CLUSTER, TAG_ADDRESS: LABEL_ADDRESS,
              TAG_CLIENT_TOKEN: LABEL_CLIENT_TOKEN}
MAX_VALUE = 63
MAX_LABELS = 64
_KEEP = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_TOKEN = re.compile(r"_([0-9a-f]{2})|([a-z0-9-])")


def encode_value(text: str) -> str:
    """``text`` as label-value characters (see the module docstring); reversible."""
    return "".join(ch if ch in _KEEP else "".join(f"_{b:02x}" for b in ch.encode())
                   for ch in text)


def decode_value(text: str) -> str:
    """The inverse of :func:`encode_value`; raises ValueError on text it cannot produce."""
    data = bytearray()
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() != position:
            break
        data += bytes([int(match[1], 16)]) if match[1] else match[2].encode()
        position = match.end()
    if position != len(text):
        raise ValueError(f"not an encoded label value: {text!r}")
    return data.decode()


def encode_label(key: str, value: str) -> dict[str, str]:
    """The labels holding ``value`` under ``key`` (split over ``KEY-2``… when long)."""
    encoded = encode_value(value)
    chunks = [encoded[i:i + MAX_VALUE] for i in range(0, len(encoded), MAX_VALUE)] or [""]
    return {(key if n == 1 else f"{key}-{n}"): chunk for n, chunk in enumerate(chunks, 1)}


def decode_label(labels: Mapping[str, str], key: str) -> str | None:
    """The value stored by :func:`encode_label` under ``key``, or None when absent or garbled."""
    if key not in labels:
        return None
    parts = [labels[key]]
    while f"{key}-{len(parts) + 1}" in labels:
        parts.append(labels[f"{key}-{len(parts) + 1}"])
    try:
        return decode_value("".join(parts))
    except (ValueError, UnicodeDecodeError):
        return None


def node_labels(tags: Mapping[str, str], provider: str) -> dict[str, str]:
    """The labels of a new instance: its fuzz tags and the provider block's name."""
    labels = encode_label(LABEL_PROVIDER, provider)
    for tag, key in TAG_LABELS.items():
        labels.update(encode_label(key, tags[tag]))
    if len(labels) > MAX_LABELS:
        raise ConfigError(
            f"gcp: the node's tags need {len(labels)} labels, more than Compute Engine's "
            f"{MAX_LABELS}; use shorter pool, node or provider names"
        )
    return labels


def filter_expression(labels: Mapping[str, str]) -> str:
    """A list filter matching instances that carry every one of ``labels``."""
    return " AND ".join(f'(labels.{key} = "{value}")' for key, value in sorted(labels.items()))
