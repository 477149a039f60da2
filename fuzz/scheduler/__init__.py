"""Pure scheduling decisions: no I/O, no clocks, the same answer for the same input."""
