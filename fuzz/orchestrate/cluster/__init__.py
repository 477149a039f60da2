"""The cluster's nodes: who joined, how they enrolled, and the elastic pools.

:mod:`~fuzz.orchestrate.cluster.nodes` is the node directory (and each node's agent
client); :mod:`~fuzz.orchestrate.cluster.jointokens` and
:mod:`~fuzz.orchestrate.cluster.enrollment` let a node join and certify its key;
:mod:`~fuzz.orchestrate.cluster.elastic` grows and shrinks pools to fit the queue.
"""
