"""Errors that the CLI turns into one clear line and a non-zero exit code.

Every failure a user can cause (bad input, a held lock, a stale plan, a provider
refusing a request) is a :class:`FuzzError`; anything else is a bug.
"""

from __future__ import annotations


class FuzzError(Exception):
    """A failure with a message meant for the user; the CLI prints it without a traceback."""

    exit_code = 1
    prefix = "Error: "


class ConfigError(FuzzError):
    """The cluster spec, a Fuzzfile or a command-line value is invalid."""


class PluginError(FuzzError):
    """A provider or state-backend plugin is missing or failed to load."""


class StateError(FuzzError):
    """Recorded state is unreadable, of another lineage, or would go backwards."""


class LockError(FuzzError):
    """The state lock is held by someone else or could not be released."""


class StalePlanError(FuzzError):
    """A saved plan no longer matches the recorded state it was made against."""
