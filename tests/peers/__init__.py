"""Real third-party MTAs run as peers of the operator in tests and benchmarks."""
