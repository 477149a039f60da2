"""Where a federation is declared unless told otherwise.

Apart from fuzz/spec/federation.py so that the CLI's ``--federation`` option can name it
without importing the federation spec's models on every command's start.
"""

DEFAULT_FILE = "federation.yaml"
