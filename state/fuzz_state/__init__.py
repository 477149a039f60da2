"""fuzz state backends, registered under the fuzz.state entry-point group."""
