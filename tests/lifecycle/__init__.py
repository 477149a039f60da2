"""Plan and apply around the engine: crash consistency, state sealing and encryption."""
