"""Benchmarks of the patterns on the local target, with nginx and direct calls as baselines.

`python -m bench` (or `bench/run`) runs everything and writes bench/results/latest.md and .json;
`--quick` runs a reduced suite in well under a minute (used by tests/test_bench.py).
"""
