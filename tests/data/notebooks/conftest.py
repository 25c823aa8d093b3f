"""These notebooks are inputs of tests/test_runner*.py (one fails on purpose), not notebooks for nbval."""

collect_ignore_glob = ["*.ipynb"]
