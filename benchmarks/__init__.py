"""Benchmarks: latency, throughput and image quality side by side."""
