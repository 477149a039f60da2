"""What a node offers and who holds it: inventory, declared inventory, leases and devices.

:mod:`~fuzz.substrate.capacity.inventory` reads the machine,
:mod:`~fuzz.substrate.capacity.declared` reads an inventory file instead,
:mod:`~fuzz.substrate.capacity.leases` books leases against either, and
:mod:`~fuzz.substrate.capacity.devices` turns a lease's GPUs into container edits,
from the node's CDI specs (:mod:`~fuzz.substrate.capacity.cdi`) where there are some.
"""
