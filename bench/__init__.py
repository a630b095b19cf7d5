"""ens-status benchmarks (not tests): the SPEC §8 figures beside same-run baselines, as one table.

Run `python -m bench` from the project root; see `bench/__main__.py` and docs/benchmarks.md.
"""
