"""Benchmarks: scripts that start private servers and workers and print one JSON line per figure.

Never part of the test suite; `make bench` runs them all (`python -m benchmarks.run_all`).
"""
