"""Benchmark support: dataset writers and the measurements built on them."""
