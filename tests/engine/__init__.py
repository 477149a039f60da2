"""Pure cores: the engine, the scheduler, the spec and Fuzzfile loaders, units and resources."""
