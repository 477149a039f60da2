"""The ``fuzz`` command line.

gRPC's C core logs on its own (``I1206 … ssl_transport_security.cc … Handshake failed``)
unless told otherwise before ``grpc`` is first imported, which the CLI's modules do:
here, before any of them, it is told to keep quiet (an environment that sets
``GRPC_VERBOSITY`` keeps its own). The CLI says each failure in one line of its own.
"""

import os

os.environ.setdefault("GRPC_VERBOSITY", "NONE")
