"""Prometheus rules generated from the SLO spec: their shape, `promtool check rules`, and
`promtool test rules` proving that the 1h/5m page fires under a sustained 14.4x burn and not at 1x.

The promtool unit tests are built here from Python (scenario by scenario, the arithmetic in comments) and
run against the generated rule file in a temporary directory.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from labkit.measure.histograms import GENERATION_ENDPOINT_MATCHER
from labkit.measure.slo.alerts import WORKBOOK_ALERTS, AlertProfileName, BurnRateAlert
from labkit.measure.slo.rules import (
    LONG_WINDOW_INTERVAL_S,
    RULES_FILE_NAME,
    alert_annotations,
    alert_name,
    counter_selectors,
    events_record,
    generate_rules,
    long_windows,
    rules_yaml,
    step_window,
    write_rules_file,
)
from labkit.measure.slo.spec import SloDefinition, SloSpecError, load_slo_spec
from tests.promtool import promtool, run_promtool_tests

AVAILABILITY_OBJECTIVE = "99% of valid requests succeed"
GOOD = 'llm_requests_total{endpoint="/generate",status_code="200"}'
ERRORS = 'llm_requests_total{endpoint="/generate",status_code="500"}'
CLIENT_ERRORS = 'llm_requests_total{endpoint="/generate",status_code="422"}'


@pytest.fixture(scope="module")
def slos() -> list[SloDefinition]:
    return load_slo_spec()


def _rules(slos: list[SloDefinition]) -> list[dict[str, Any]]:
    return [rule for group in generate_rules(slos)["groups"] for rule in group["rules"]]


def test_one_error_ratio_per_objective_and_window(slos: list[SloDefinition]) -> None:
    rules = _rules(slos)
    records = [r for r in rules if "record" in r and r["record"].startswith("slo:sli_error:")]
    events = [r for r in rules if "record" in r and r["record"].startswith("slo:sli_events:increase")]
    steps = [r for r in rules if "record" in r and "_step:" in r["record"]]
    objectives = sum(len(s.objectives) for s in slos)  # 1 + 1 + 2 + 1 = 5
    assert len(records) == objectives * 7  # 5m 30m 1h 2h 6h 1d 3d
    assert len(events) == objectives * 7
    assert len(steps) == objectives * 2  # the long windows' steps: valid and good events per second
    assert len([r for r in rules if "alert" in r]) == objectives * 4
    latency = [r for r in records if r["labels"]["slo"] == "latency" and r["record"].endswith("rate5m")]
    # the bucket selector spells le as the exposition does: "3.0", never "3"
    assert [r["labels"]["objective"] for r in latency] == [
        "95% of requests within 3 s",
        "99% of requests within 5 s",
    ]
    assert 'llm_request_duration_seconds_bucket{le="3.0"}[5m]' in latency[0]["expr"]
    assert 'llm_request_duration_seconds_bucket{le="5.0"}[5m]' in latency[1]["expr"]
    # counts are summed, then divided once (never an average of ratios)
    assert "avg" not in latency[0]["expr"] and latency[0]["expr"].count("/") == 1


@pytest.mark.parametrize(("profile", "slow"), [("lab", ["48m", "144m"]), ("production", ["2h", "1d", "3d"])])
def test_long_ticket_windows_are_recorded_in_a_slower_group_and_pages_read_none(
    slos: list[SloDefinition], profile: AlertProfileName, slow: list[str]
) -> None:
    assert long_windows(profile) == slow
    groups = generate_rules(slos, profile=profile)["groups"]
    for slo in slos:
        (fast,) = [g for g in groups if g["name"] == f"slo-{slo.name}"]
        (long,) = [g for g in groups if g["name"] == f"slo-{slo.name}-long-windows"]
        assert "interval" not in fast and long["interval"] == f"{LONG_WINDOW_INTERVAL_S}s"
        step = step_window(profile)
        assert step == {"lab": "2m", "production": "5m"}[profile]
        records = [r["record"] for r in long["rules"]]
        assert records[:2] == [f"slo:sli_events_step:increase{step}", f"slo:sli_good_step:increase{step}"]
        windows = [r for r in long["rules"] if "_step:" not in r["record"]]
        assert {r["record"].rsplit("e", 1)[-1] for r in windows} == set(slow)  # ...increase144m, ...rate144m
        # a long window adds up the steps recorded every 30 s; it reads no counter sample itself
        assert all("increase(" not in r["expr"] and "sum_over_time(" in r["expr"] for r in windows)
        assert all("alert" not in r for r in long["rules"])
        pages = [r for r in fast["rules"] if r.get("labels", {}).get("severity") == "page"]
        assert pages and not any(f"{w}{{" in r["expr"] for r in pages for w in slow)


def test_each_window_reads_the_valid_counter_once_per_evaluation(slos: list[SloDefinition]) -> None:
    # The events record reads the counter's window; the error ratio after it, in the same group, reads the
    # record (and the good counter's window): rules of a group run in order at one timestamp.
    for group in generate_rules(slos, profile="lab")["groups"]:
        recorded: set[str] = set()
        for rule in group["rules"]:
            if "record" not in rule:
                continue
            if rule["record"].startswith("slo:sli_error:") and "sum_over_time(" not in rule["expr"]:
                window = rule["record"].removeprefix("slo:sli_error:ratio_rate")
                assert rule["expr"].count("increase(") == 1 and events_record(window) in recorded
            recorded.add(rule["record"])


def test_alerts_carry_severity_windows_and_the_burn_factor(slos: list[SloDefinition]) -> None:
    alerts = [r for r in _rules(slos) if r.get("alert") and r["labels"]["slo"] == "availability"]
    assert [
        (a["labels"]["severity"], a["labels"]["long_window"], a["labels"]["short_window"]) for a in alerts
    ] == [
        ("page", "1h", "5m"),
        ("page", "6h", "30m"),
        ("ticket", "1d", "2h"),
        ("ticket", "3d", "6h"),
    ]
    page = alerts[0]
    assert page["alert"] == "SloErrorBudgetBurnPage"
    # 14.4 * (1 - 0.99) = 0.144 over both windows
    assert "slo:sli_error:ratio_rate1h" in page["expr"] and ">= 0.144" in page["expr"]
    assert "slo:sli_error:ratio_rate5m" in page["expr"]
    assert "14.4x" in page["annotations"]["summary"]
    assert "2.08 days" in page["annotations"]["description"]


def test_ratio_queries_must_be_sums_of_a_selector(slos: list[SloDefinition]) -> None:
    availability = slos[0]
    assert counter_selectors(availability) == (
        f'llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code=~"2.."}}',
        f'llm_requests_total{{{GENERATION_ENDPOINT_MATCHER},status_code=~"[1235]..|429"}}',
    )
    odd = availability.model_copy(update={"good_query": "rate(llm_requests_total[5m])"})
    with pytest.raises(SloSpecError, match=r"must have the form sum\("):
        generate_rules([odd])


def test_promtool_check_rules_accepts_the_generated_rules(tmp_path: Path) -> None:
    binary = promtool()
    path = write_rules_file(tmp_path / "rules")
    assert path == tmp_path / "rules" / RULES_FILE_NAME
    assert path.read_text() == rules_yaml()
    result = subprocess.run(
        [binary, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # 5 objectives x (7 windows x (error ratio, events) + 2 steps) + 5 x 4 alerts
    assert "SUCCESS: 100 rules found" in result.stdout


def _expected(slos: list[SloDefinition], alert: BurnRateAlert) -> dict[str, Any]:
    slo = slos[0]
    objective = slo.objectives[0]
    return {
        "exp_labels": {
            "severity": alert.severity,
            "slo": slo.name,
            "objective": objective.display_name,
            "long_window": alert.long_window,
            "short_window": alert.short_window,
            "burn_factor": f"{alert.factor:g}",
            "alert_profile": "production",
            "window_scale": "1/1",
        },
        "exp_annotations": alert_annotations(slo, objective, alert),
    }


def _ratio_sample(value: float) -> dict[str, Any]:
    return {
        "labels": f'slo:sli_error:ratio_rate5m{{objective="{AVAILABILITY_OBJECTIVE}", slo="availability"}}',
        "value": value,
    }


def test_promtool_page_fires_under_a_sustained_14_4x_burn(tmp_path: Path, slos: list[SloDefinition]) -> None:
    page_1h, page_6h = WORKBOOK_ALERTS[0], WORKBOOK_ALERTS[1]
    # 1000 requests a minute. Minutes 0-120: all good. From minute 120 on: 856 good + 144 errors a minute,
    # an error ratio of 144 / 1000 = 0.144 = 14.4 x the 1 % budget.
    # good: 0, 1000, ..., 120000 at minute 120; then +856 a minute.  errors: 0 to minute 120; then +144.
    series = [
        {"series": GOOD, "values": "0+1000x120 120856+856x75"},
        {"series": ERRORS, "values": "0+0x120 144+144x75"},
        # 422s are the client's fault: not valid, so they do not dilute the error ratio.
        {"series": CLIENT_ERRORS, "values": "0+500x195"},
    ]
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                # minute 180, last 5 minutes: (5000 - 4280) / 5000 = 0.144
                {
                    "expr": "slo:sli_error:ratio_rate5m",
                    "eval_time": "180m",
                    "exp_samples": [_ratio_sample(0.144)],
                },
            ],
            "alert_rule_test": [
                # minute 125: 5m ratio 0.144, 1h ratio 720 / 60000 = 0.012: the short window alone never pages
                {"eval_time": "125m", "alertname": alert_name(page_1h), "exp_alerts": []},
                # minute 160: 1h ratio 40 * 144 / 60000 = 0.096 < 0.144: not yet
                {"eval_time": "160m", "alertname": alert_name(page_1h), "exp_alerts": []},
                # minute 180: 1h ratio 60 * 144 / 60000 = 0.144 and 5m 0.144: the 1h/5m page fires. The
                # 6h/30m page does not: the 6h window holds all 180 minutes, 8640 / 180000 = 0.048 < 6 x 0.01.
                {
                    "eval_time": "180m",
                    "alertname": alert_name(page_1h),
                    "exp_alerts": [_expected(slos, page_1h)],
                },
                {
                    "eval_time": "195m",
                    "alertname": alert_name(page_1h),
                    "exp_alerts": [_expected(slos, page_1h)],
                },
            ],
        },
        {
            # Sustained from the start for 70 minutes: both page pairs (0.144 >= 0.144 and >= 0.06).
            "interval": "1m",
            "input_series": [
                {"series": GOOD, "values": "0+856x70"},
                {"series": ERRORS, "values": "0+144x70"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "70m",
                    "alertname": alert_name(page_1h),
                    "exp_alerts": [_expected(slos, page_1h), _expected(slos, page_6h)],
                },
            ],
        },
    ]
    run_promtool_tests(tmp_path, tests, rules=rules_yaml())


def test_promtool_page_stays_silent_at_1x(tmp_path: Path, slos: list[SloDefinition]) -> None:
    ticket_3d = WORKBOOK_ALERTS[3]
    # 990 good + 10 errors a minute for 2 hours: error ratio 0.01 = exactly the budget, 1x.
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": [
                {"series": GOOD, "values": "0+990x120"},
                {"series": ERRORS, "values": "0+10x120"},
            ],
            "promql_expr_test": [
                {
                    "expr": "slo:sli_error:ratio_rate5m",
                    "eval_time": "120m",
                    "exp_samples": [_ratio_sample(0.01)],
                },
            ],
            "alert_rule_test": [
                {"eval_time": f"{m}m", "alertname": alert_name(WORKBOOK_ALERTS[0]), "exp_alerts": []}
                for m in (30, 60, 120)
            ]
            # At exactly 1x only the 1x ticket is on its threshold (>= 10 % of the budget in 3 days).
            + [
                {
                    "eval_time": "120m",
                    "alertname": "SloErrorBudgetBurnTicket",
                    "exp_alerts": [_expected(slos, ticket_3d)],
                }
            ],
        }
    ]
    run_promtool_tests(tmp_path, tests, rules=rules_yaml())


def test_promtool_no_traffic_records_nothing_and_total_failure_is_a_ratio_of_one(tmp_path: Path) -> None:
    tests: list[dict[str, Any]] = [
        {
            # Counters that do not move: no valid events, no error ratio, nothing to alert on.
            "interval": "1m",
            "input_series": [{"series": GOOD, "values": "5+0x30"}, {"series": ERRORS, "values": "2+0x30"}],
            "promql_expr_test": [
                {"expr": "slo:sli_error:ratio_rate5m", "eval_time": "20m", "exp_samples": []}
            ],
            "alert_rule_test": [
                {"eval_time": "20m", "alertname": "SloErrorBudgetBurnPage", "exp_alerts": []}
            ],
        },
        {
            # Only errors, and no series of good requests at all: an error ratio of 1, not "no data".
            "interval": "1m",
            "input_series": [{"series": ERRORS, "values": "0+10x30"}],
            "promql_expr_test": [
                {"expr": "slo:sli_error:ratio_rate5m", "eval_time": "20m", "exp_samples": [_ratio_sample(1)]}
            ],
        },
    ]
    run_promtool_tests(tmp_path, tests, rules=rules_yaml())


def test_promtool_availability_counts_every_generation_endpoint_and_429_as_bad(tmp_path: Path) -> None:
    chat = 'llm_requests_total{{endpoint="/v1/chat/completions",status_code="{}"}}'
    models = 'llm_requests_total{endpoint="/v1/models",status_code="500"}'
    # A minute: 900 good on /generate, 80 good and 10 shed (429: the server was full) on /v1, 10 bad
    # bodies (400: the client's) and 100 errors on an endpoint that generates nothing (not selected).
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": [
                {"series": GOOD, "values": "0+900x30"},
                {"series": chat.format(200), "values": "0+80x30"},
                {"series": chat.format(429), "values": "0+10x30"},
                {"series": chat.format(400), "values": "0+10x30"},
                {"series": models, "values": "0+100x30"},
            ],
            "promql_expr_test": [
                {
                    "expr": "slo:sli_error:ratio_rate5m",
                    "eval_time": "20m",
                    "exp_samples": [_ratio_sample(10 / (900 + 80 + 10))],
                }
            ],
        }
    ]
    run_promtool_tests(tmp_path, tests, rules=rules_yaml())


def test_promtool_latency_ratio_reads_the_bucket_at_the_threshold(tmp_path: Path) -> None:
    bucket = 'llm_request_duration_seconds_bucket{{endpoint="/generate",le="{le}"}}'
    tests: list[dict[str, Any]] = [
        {
            # 100 requests a minute, 90 within 3 s, 99 within 5 s: error ratios 10/100 and 1/100.
            "interval": "1m",
            "input_series": [
                {"series": bucket.format(le="3.0"), "values": "0+90x10"},
                {"series": bucket.format(le="5.0"), "values": "0+99x10"},
                {"series": bucket.format(le="+Inf"), "values": "0+100x10"},
                {"series": 'llm_request_duration_seconds_count{endpoint="/generate"}', "values": "0+100x10"},
            ],
            "promql_expr_test": [
                {
                    "expr": 'slo:sli_error:ratio_rate5m{slo="latency"}',
                    "eval_time": "10m",
                    "exp_samples": [
                        {
                            "labels": 'slo:sli_error:ratio_rate5m{objective="95% of requests within 3 s", '
                            'slo="latency"}',
                            "value": 0.1,
                        },
                        {
                            "labels": 'slo:sli_error:ratio_rate5m{objective="99% of requests within 5 s", '
                            'slo="latency"}',
                            "value": 0.01,
                        },
                    ],
                }
            ],
        }
    ]
    run_promtool_tests(tmp_path, tests, rules=rules_yaml())


def test_promtool_long_windows_add_up_their_steps_to_the_window_ratio_and_count(tmp_path: Path) -> None:
    # The lab profile's 48m and 144m windows add up the 2m increases its slower group records every 30 s.
    # Every 10 s: 9 good requests, 1 error, 5 client errors (not valid) for 150 minutes: an error ratio of
    # exactly 0.1 over both windows, and 48 min x 60 valid requests a minute = 2880 valid events in 48m
    # (2910 where the range holds the step at its left edge too, as Prometheus 2.x's ranges do: 97 steps).
    samples = 150 * 6
    objective = {"objective": AVAILABILITY_OBJECTIVE, "slo": "availability"}
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(objective.items()))
    tests: list[dict[str, Any]] = [
        {
            "interval": "10s",
            "input_series": [
                {"series": GOOD, "values": f"0+9x{samples}"},
                {"series": ERRORS, "values": f"0+1x{samples}"},
                {"series": CLIENT_ERRORS, "values": f"0+5x{samples}"},
            ],
            "promql_expr_test": [
                *(
                    {
                        "expr": f"slo:sli_error:ratio_rate{w}",
                        "eval_time": "150m",
                        "exp_samples": [{"labels": f"slo:sli_error:ratio_rate{w}{{{labels}}}", "value": 0.1}],
                    }
                    for w in ("48m", "144m")
                ),
                {
                    "expr": f"count(slo:sli_events:increase48m{{{labels}}} >= 2880 <= 2910)",
                    "eval_time": "150m",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                },
            ],
        }
    ]
    # promtool evaluates every group at the test's interval, whatever the group's own: 30 s, as in a lab
    run_promtool_tests(
        tmp_path, tests, rules=rules_yaml(profile="lab"), evaluation_interval=f"{LONG_WINDOW_INTERVAL_S}s"
    )
