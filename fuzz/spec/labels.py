"""Node labels that fuzz itself sets from the cluster spec and the node agent reads.

Standard library only, and nothing else: the agent's container monitor (a
``python -S`` helper) imports it through :mod:`fuzz.substrate.jobnet`.
"""

NETWORK_LABEL = "fuzz:network"  # a node label; ``host`` on the nodes of a host-network pool
