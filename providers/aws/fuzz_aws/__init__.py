"""fuzz provider plugin for Amazon EC2 nodes."""
