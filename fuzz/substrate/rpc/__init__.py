"""The agent's gRPC servicers beyond the core: jobs (:mod:`~fuzz.substrate.rpc.jobs`) and
the Exec and PortForward streams (:mod:`~fuzz.substrate.rpc.access`)."""
