"""State backends (local, S3, PostgreSQL) and the state commands over them."""
