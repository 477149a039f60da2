"""Placeholder entry point, replaced by the CLI."""


def main() -> None:
    """Run the fuzz command line."""
