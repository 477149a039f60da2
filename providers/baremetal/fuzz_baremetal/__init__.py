"""fuzz provider plugin for Warewulf bare-metal nodes."""
