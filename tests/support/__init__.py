"""Helpers and fixtures the tests import as ``tests.support.X`` (no tests here)."""
