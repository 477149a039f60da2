"""The declared test node (``--inventory``): 2 sockets x 2 NUMA domains x 8 cores, 2 GPUs."""

from __future__ import annotations

GiB = 1024**3


def declared_node_yaml(labels: str = "") -> str:
    """The node's inventory file, with ``labels`` (a YAML flow mapping) when given."""
    text = (
        "sockets: 2\n"
        "numa_per_socket: 2\n"
        "cores_per_numa: 8\n"
        "memory: 64GiB\n"
        "gpus: [{model: A100, memory: 40GiB, numa: 0}, {model: A100, memory: 40GiB, numa: 2}]\n"
    )
    return text + (f"labels: {labels}\n" if labels else "")
