"""Federate: route a workflow to the member cluster that suits it, and say why.

Pure, like the engine and the scheduler: the CLI gathers each member's facts over
gRPC (:mod:`fuzz.cli.federation`) and hands them here; nothing in this package does
I/O. :mod:`.demand` reads what a workflow asks for out of its Fuzzfile,
:mod:`.cost` prices it on a member, :mod:`.policy` gives the federation's verdicts,
and :mod:`.route` decides.
"""
