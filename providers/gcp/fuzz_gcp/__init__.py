"""fuzz provider plugin for Google Compute Engine nodes."""
