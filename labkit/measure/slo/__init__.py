"""SLOs: the spec, SLIs from client samples and from Prometheus, budgets, burn rates, alert rules.

The spec is an OpenSLO v1 subset (`stack/slo.yaml`); SLO.md explains it for people.
"""

import typing as _typing

from labkit._lazy import lazy_exports as _lazy_exports

# Lazy: `labkit.measure.slo.rules` (imported by every `labkit up`) must not pull pandas in with the client
# SLIs; the names below load on first use.

__getattr__, __dir__ = _lazy_exports(__name__)

if _typing.TYPE_CHECKING:
    from labkit.measure.histograms import BucketQuantile, bucket_quantile, cumulative_buckets
    from labkit.measure.slo.alerts import (
        ALERT_PROFILES,
        ALERT_WINDOWS,
        LAB_WINDOW_DIVISOR,
        WORKBOOK_ALERTS,
        AlertProfile,
        AlertState,
        BurnRateAlert,
        WindowScaling,
        alert_profile,
        alert_threshold,
        evaluate_alerts,
        scale_alert_windows,
    )
    from labkit.measure.slo.budget import (
        SLO_WINDOW_30D_S,
        budget_consumed,
        burn_rate,
        error_budget_remaining,
        error_ratio,
        goodput_rps,
        time_to_exhaustion_s,
    )
    from labkit.measure.slo.client import (
        SamplesError,
        objective_events,
        read_samples,
        requests_meeting_every_slo,
        samples_frame,
        valid_requests,
    )
    from labkit.measure.slo.compare import (
        COMPARISON_COLUMNS,
        compare_client_server,
        exact_quantile,
        explain_client_server,
    )
    from labkit.measure.slo.rules import generate_rules, rules_yaml, write_rules_file
    from labkit.measure.slo.server import SERVER_SLI_COLUMNS, server_quantile, server_slis
    from labkit.measure.slo.spec import (
        HISTOGRAM_BUCKETS,
        Objective,
        SloDefinition,
        SloSpecError,
        default_spec_path,
        load_slo_spec,
        parse_duration_s,
    )
    from labkit.measure.slo.verdict import (
        ObjectiveResult,
        SloReport,
        check_run,
        evaluate_client_slos,
        format_report,
    )

__all__ = [
    "ALERT_PROFILES",
    "ALERT_WINDOWS",
    "COMPARISON_COLUMNS",
    "HISTOGRAM_BUCKETS",
    "LAB_WINDOW_DIVISOR",
    "SERVER_SLI_COLUMNS",
    "SLO_WINDOW_30D_S",
    "WORKBOOK_ALERTS",
    "AlertProfile",
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
    "alert_profile",
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
