"""placeholder, replaced by the local backend."""
