"""fuzz state backends on S3 and PostgreSQL (extras ``s3``, ``postgres``), as fuzz.state plugins.

The default ``local`` backend is fuzz's own (:mod:`fuzz.default_plugins.local_state`).
"""
