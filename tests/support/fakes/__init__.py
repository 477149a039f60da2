"""Local servers that speak real cloud APIs' wire formats, for tests of the cloud providers."""
