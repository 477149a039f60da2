"""The fuzz CLI as users run it."""
