"""End to end: local clusters through the real CLI, server, agents and runc."""
