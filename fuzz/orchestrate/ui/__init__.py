"""The web UI: the application catalog, forms, workflows followed live, logs, an editor.

A Starlette app (:mod:`.app`) served by uvicorn over TLS on a port of its own
(:mod:`.serve`), with the endpoint gateway's certificate and sign-ins (:mod:`.access`).
Every page calls the orchestrator's gRPC API with the signed-in user's own token, so
IAM, the curtain and the limits are the API's.
"""
