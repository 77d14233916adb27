"""Benchmarks that print figures (never assert timings); see bench/README.md."""
