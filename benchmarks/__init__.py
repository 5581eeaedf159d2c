"""Benchmarks: run one with `python -m benchmarks.<name>`; they are not part of the tests."""
