"""Benchmarks: time to a verified kill, against the ways people do it today.

Run with ``python -m bench`` (``make bench``); see bench/README.md. Nothing here is a
test: the figures are ratios against baselines measured in the same run.
"""
