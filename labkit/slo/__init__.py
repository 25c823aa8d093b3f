"""SLOs: the spec, SLIs from client samples and from Prometheus, budgets, burn rates, alert rules.

The spec is an OpenSLO v1 subset (`stack/slo.yaml`); SLO.md explains it for people.
"""

import typing as _typing

from labkit._lazy import lazy_exports as _lazy_exports

# Lazy: `labkit.slo.rules` (imported by every `labkit up`) must not pull pandas in with the client SLIs.
_EXPORTS = {
    "BucketQuantile": "labkit.histograms",
    "bucket_quantile": "labkit.histograms",
    "cumulative_buckets": "labkit.histograms",
    "ALERT_WINDOWS": "labkit.slo.alerts",
    "WORKBOOK_ALERTS": "labkit.slo.alerts",
    "AlertState": "labkit.slo.alerts",
    "BurnRateAlert": "labkit.slo.alerts",
    "WindowScaling": "labkit.slo.alerts",
    "alert_threshold": "labkit.slo.alerts",
    "evaluate_alerts": "labkit.slo.alerts",
    "scale_alert_windows": "labkit.slo.alerts",
    "SLO_WINDOW_30D_S": "labkit.slo.budget",
    "budget_consumed": "labkit.slo.budget",
    "burn_rate": "labkit.slo.budget",
    "error_budget_remaining": "labkit.slo.budget",
    "error_ratio": "labkit.slo.budget",
    "goodput_rps": "labkit.slo.budget",
    "time_to_exhaustion_s": "labkit.slo.budget",
    "SamplesError": "labkit.slo.client",
    "objective_events": "labkit.slo.client",
    "read_samples": "labkit.slo.client",
    "requests_meeting_every_slo": "labkit.slo.client",
    "samples_frame": "labkit.slo.client",
    "valid_requests": "labkit.slo.client",
    "COMPARISON_COLUMNS": "labkit.slo.compare",
    "compare_client_server": "labkit.slo.compare",
    "exact_quantile": "labkit.slo.compare",
    "explain_client_server": "labkit.slo.compare",
    "generate_rules": "labkit.slo.rules",
    "rules_yaml": "labkit.slo.rules",
    "write_rules_file": "labkit.slo.rules",
    "SERVER_SLI_COLUMNS": "labkit.slo.server",
    "server_quantile": "labkit.slo.server",
    "server_slis": "labkit.slo.server",
    "HISTOGRAM_BUCKETS": "labkit.slo.spec",
    "Objective": "labkit.slo.spec",
    "SloDefinition": "labkit.slo.spec",
    "SloSpecError": "labkit.slo.spec",
    "default_spec_path": "labkit.slo.spec",
    "load_slo_spec": "labkit.slo.spec",
    "parse_duration_s": "labkit.slo.spec",
    "ObjectiveResult": "labkit.slo.verdict",
    "SloReport": "labkit.slo.verdict",
    "check_run": "labkit.slo.verdict",
    "evaluate_client_slos": "labkit.slo.verdict",
    "format_report": "labkit.slo.verdict",
}

__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

if _typing.TYPE_CHECKING:
    from labkit.histograms import BucketQuantile, bucket_quantile, cumulative_buckets
    from labkit.slo.alerts import (
        ALERT_WINDOWS,
        WORKBOOK_ALERTS,
        AlertState,
        BurnRateAlert,
        WindowScaling,
        alert_threshold,
        evaluate_alerts,
        scale_alert_windows,
    )
    from labkit.slo.budget import (
        SLO_WINDOW_30D_S,
        budget_consumed,
        burn_rate,
        error_budget_remaining,
        error_ratio,
        goodput_rps,
        time_to_exhaustion_s,
    )
    from labkit.slo.client import (
        SamplesError,
        objective_events,
        read_samples,
        requests_meeting_every_slo,
        samples_frame,
        valid_requests,
    )
    from labkit.slo.compare import (
        COMPARISON_COLUMNS,
        compare_client_server,
        exact_quantile,
        explain_client_server,
    )
    from labkit.slo.rules import generate_rules, rules_yaml, write_rules_file
    from labkit.slo.server import SERVER_SLI_COLUMNS, server_quantile, server_slis
    from labkit.slo.spec import (
        HISTOGRAM_BUCKETS,
        Objective,
        SloDefinition,
        SloSpecError,
        default_spec_path,
        load_slo_spec,
        parse_duration_s,
    )
    from labkit.slo.verdict import ObjectiveResult, SloReport, check_run, evaluate_client_slos, format_report

__all__ = [
    "ALERT_WINDOWS",
    "COMPARISON_COLUMNS",
    "HISTOGRAM_BUCKETS",
    "SERVER_SLI_COLUMNS",
    "SLO_WINDOW_30D_S",
    "WORKBOOK_ALERTS",
    "AlertState",
    "BucketQuantile",
    "BurnRateAlert",
    "Objective",
    "ObjectiveResult",
    "SamplesError",
    "SloDefinition",
    "SloReport",
    "SloSpecError",
    "WindowScaling",
    "alert_threshold",
    "bucket_quantile",
    "budget_consumed",
    "burn_rate",
    "check_run",
    "compare_client_server",
    "cumulative_buckets",
    "default_spec_path",
    "error_budget_remaining",
    "error_ratio",
    "evaluate_alerts",
    "evaluate_client_slos",
    "exact_quantile",
    "explain_client_server",
    "format_report",
    "generate_rules",
    "goodput_rps",
    "load_slo_spec",
    "objective_events",
    "parse_duration_s",
    "read_samples",
    "requests_meeting_every_slo",
    "rules_yaml",
    "samples_frame",
    "scale_alert_windows",
    "server_quantile",
    "server_slis",
    "time_to_exhaustion_s",
    "valid_requests",
    "write_rules_file",
]
