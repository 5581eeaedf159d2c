"""kmflow's benchmark suite: `python -m benchmarks` (or `scripts/bench`) runs every scenario
of the benchmarks issue against its baselines and writes benchmarks/RESULTS.md. Timings live
here, never in unit tests. `python -m benchmarks.list_latency` is the in-process list
benchmark of the delta and local backends."""
