"""Test infrastructure shipped with fuzz: real registries and images for tests and benchmarks."""
