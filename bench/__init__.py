"""The benchmark harness: `python bench/run.py` (see the README, "Benchmark")."""
