"""The span processor and the sampler: where finished SERVER spans enter Beacon."""
