"""SLOs: the spec, SLIs from client samples and from Prometheus, budgets, burn rates, alert rules.

The spec is an OpenSLO v1 subset (`stack/slo.yaml`); SLO.md explains it for people.
"""

from labkit.slo.spec import (
    HISTOGRAM_BUCKETS,
    Objective,
    SloDefinition,
    SloSpecError,
    default_spec_path,
    load_slo_spec,
    parse_duration_s,
)

__all__ = [
    "HISTOGRAM_BUCKETS",
    "Objective",
    "SloDefinition",
    "SloSpecError",
    "default_spec_path",
    "load_slo_spec",
    "parse_duration_s",
]
