"""Benchmarks (`make bench`): speed and memory figures on the local sandbox; never part of `make test`."""
