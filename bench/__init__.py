"""batchray benchmarks. Each scenario measures batchray against a baseline *in the same run*
and reports ratios, since the machines they run on are shared and noisy.

Run all: ``python -m bench`` (``--quick`` for smaller sizes, ``--only NAME`` for one).
"""
