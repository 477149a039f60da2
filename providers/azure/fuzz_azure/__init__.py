"""fuzz provider plugin for Azure virtual machines nodes."""
