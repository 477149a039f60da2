"""The launch socket of a multinode MPI job's containers: MPI's remote start without SSH.

``fuzz-launch.c`` is the helper the launchers call instead of ssh (built by ``make
setup`` into ``bin/``); :mod:`.sockets` serves the socket it talks to.
"""
