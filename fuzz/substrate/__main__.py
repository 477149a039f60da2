"""Allow ``python -m fuzz.substrate serve ...``: the same group as ``fuzz substrate``."""

from fuzz.substrate.cli import substrate

if __name__ == "__main__":
    substrate(prog_name="python -m fuzz.substrate")
