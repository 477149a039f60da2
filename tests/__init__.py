"""The suite, one folder per layer of docs/architecture.md; tests/support/ holds their helpers."""
