"""Fuzzball's multinode variables, and their expansion in a job's command (pure).

Every container of a multinode job gets what Fuzzball gives a ``generic`` one
(reference §2.6.11), so that a launcher of the user's own (Charm++, Dask, torchrun,
``mpirun`` run by hand) can find its peers:

``MULTINODE_HOSTLIST``          ``host1:slots,host2:slots`` (rank 0 first)
``MULTINODE_HOSTLIST_NOSLOTS``  ``host1,host2``
``MULTINODE_TOTAL_SLOTS``       slots over all nodes
``MULTINODE_NODE_IP``           this rank's own address
``MULTINODE_SSH_WRAPPER``       the launch helper (``$WRAPPER HOST CMD ARGS...`` runs CMD on
``MULTINODE_RSH_WRAPPER``       HOST, no ssh), when the job's containers have one

The hosts are the ranks' job-network addresses, which need no name service; on
the host network (no job addresses) they are the nodes' names. Each rank's
``/etc/hosts`` also names every rank ``JOB-RANK`` (:func:`rank_hosts`). A ``command``'s
items (never a ``script``, which its shell expands itself) get ``$MULTINODE_X``
and ``${MULTINODE_X}`` replaced by the rank's values; other ``$`` text is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_UNSAFE = re.compile(r"[^a-z0-9-]+")
_REFERENCE = re.compile(r"\$(?:\{(MULTINODE_[A-Z_]+)\}|(MULTINODE_[A-Z_]+))")


def multinode_environment(hosts: Sequence[str], slots: int, rank: int,
                          wrapper: str = "") -> dict[str, str]:
    """Rank ``rank``'s ``MULTINODE_*`` variables for ranks on ``hosts`` of ``slots`` each.

    ``wrapper``: the path of the launch helper inside the containers (the ssh/rsh
    wrapper variables are set only with one).
    """
    variables = {
        "MULTINODE_HOSTLIST": ",".join(f"{host}:{slots}" for host in hosts),
        "MULTINODE_HOSTLIST_NOSLOTS": ",".join(hosts),
        "MULTINODE_TOTAL_SLOTS": str(slots * len(hosts)),
        "MULTINODE_NODE_IP": hosts[rank],
    }
    if wrapper:
        variables.update(MULTINODE_SSH_WRAPPER=wrapper, MULTINODE_RSH_WRAPPER=wrapper)
    return variables


def rank_hosts(key: str, addresses: Sequence[str]) -> list[str]:
    """The ``/etc/hosts`` lines that name task ``key``'s ranks: ``ADDRESS KEY-RANK`` each
    (the key lower-cased, other characters than letters, digits and ``-`` made ``-``);
    none unless every rank has an address (on the host network the nodes' own names
    are what resolve)."""
    if not addresses or not all(addresses):
        return []
    base = _UNSAFE.sub("-", key.lower()).strip("-")[:50].strip("-") or "rank"
    return [f"{address} {base}-{rank}" for rank, address in enumerate(addresses)]


def expand_multinode(argv: Sequence[str], env: Sequence[str]) -> tuple[str, ...]:
    """``argv`` with each ``$MULTINODE_X`` / ``${MULTINODE_X}`` that ``env`` (``KEY=VALUE``
    entries) defines replaced by its value; undefined ones are left as written."""
    values: Mapping[str, str] = {name: text for name, _, text in
                                 (entry.partition("=") for entry in env)
                                 if name.startswith("MULTINODE_")}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return tuple(_REFERENCE.sub(value, item) for item in argv)
