"""Allow ``python -m fuzz`` as an alias for the ``fuzz`` command."""

from fuzz.cli.main import main

if __name__ == "__main__":
    main()
