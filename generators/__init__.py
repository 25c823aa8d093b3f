"""Generators of committed files: the Grafana dashboard (`python -m generators.dashboard --write`) and the
compose stack's Prometheus files (`python -m generators.compose`). Tests fail when a committed copy is stale.

They read labkit (metric names, the SLO spec, the Prometheus template) and are not part of its runtime.
"""
