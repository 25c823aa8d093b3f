"""Alert profiles (production: the Workbook's windows; lab: every window / LAB_WINDOW_DIVISOR) and the minimum
number of events: `promtool check rules` on both profiles, and `promtool test rules` proving, for every
generated alert of both, that it fires at its burn rate, stays silent just below it and resolves once the
errors stop; and that one failure at low traffic does not page.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.measure.slo.alerts import (
    ALERT_PROFILES,
    LAB_WINDOW_DIVISOR,
    AlertProfileName,
    BurnRateAlert,
    alert_threshold,
    format_duration,
)
from labkit.measure.slo.rules import RULES_FILE_NAME, generate_rules, rules_yaml
from labkit.measure.slo.spec import (
    ALERT_MIN_EVENTS_ANNOTATION,
    DEFAULT_ALERT_MIN_EVENTS,
    SloSpecError,
    default_spec_path,
    load_slo_spec,
)
from tests.promtool import promtool, run_promtool_tests

GOOD = 'llm_requests_total{endpoint="/generate",status_code="200"}'
ERRORS = 'llm_requests_total{endpoint="/generate",status_code="500"}'
TARGET = 0.99  # the availability objective of stack/slo.yaml
PER_INTERVAL = 1000  # requests per input sample interval


def test_lab_profile_scales_every_window_by_one_divisor() -> None:
    production, lab = ALERT_PROFILES["production"], ALERT_PROFILES["lab"]
    assert lab.window_divisor == LAB_WINDOW_DIVISOR == 30
    assert [(a.long_window, a.short_window) for a in lab.alerts] == [
        ("2m", "10s"),
        ("12m", "1m"),
        ("48m", "4m"),
        ("144m", "12m"),
    ]
    for prod, scaled in zip(production.alerts, lab.alerts, strict=True):
        assert scaled.factor == prod.factor and scaled.severity == prod.severity
        assert scaled.long_window_s * LAB_WINDOW_DIVISOR == prod.long_window_s
        assert scaled.short_window_s * LAB_WINDOW_DIVISOR == prod.short_window_s
    # the lab's page reads a long window of a few minutes at most
    assert max(a.long_window_s for a in lab.alerts if a.severity == "page") <= 15 * 60
    assert format_duration(8640) == "144m" and format_duration(10) == "10s" and format_duration(86400) == "1d"
    with pytest.raises(ValueError, match="whole number"):
        format_duration(0.5)


@pytest.mark.parametrize("profile", ["production", "lab"])
def test_every_alert_names_its_profile_and_requires_the_minimum_events(profile: AlertProfileName) -> None:
    rules = [r for g in generate_rules(load_slo_spec(), profile=profile)["groups"] for r in g["rules"]]
    alerts = [r for r in rules if "alert" in r]
    assert alerts and all(r["labels"]["alert_profile"] == profile for r in alerts)
    scale = f"1/{ALERT_PROFILES[profile].window_divisor}"
    assert all(r["labels"]["window_scale"] == scale for r in alerts)
    assert all(f">= {DEFAULT_ALERT_MIN_EVENTS}" in r["expr"].split("slo:sli_events:")[1] for r in alerts)
    assert f"alert profile {profile}" in rules_yaml(profile=profile).splitlines()[3]


@pytest.mark.parametrize("profile", ["production", "lab"])
def test_promtool_check_rules_accepts_both_profiles(tmp_path: Path, profile: AlertProfileName) -> None:
    path = tmp_path / RULES_FILE_NAME
    path.write_text(rules_yaml(profile=profile))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _firing(alert: BurnRateAlert) -> str:
    return (
        f'count(ALERTS{{alertstate="firing",slo="availability",long_window="{alert.long_window}",'
        f'short_window="{alert.short_window}"}})'
    )


def _burn_then_stop(alert: BurnRateAlert, errors: int, interval_s: int) -> dict[str, Any]:
    """`errors` of every PER_INTERVAL requests fail from 0 until the long window plus two short windows
    have passed, then none: the alert must fire (or not) while the burn lasts and be resolved one short
    window (plus a sample) after it stops."""
    burn = int((alert.long_window_s + 2 * alert.short_window_s) // interval_s)
    after = int(alert.short_window_s // interval_s) + 2
    good = PER_INTERVAL - errors
    stop_s = burn * interval_s
    fires = errors >= alert_threshold(alert.factor, TARGET) * PER_INTERVAL
    during = [{"labels": "{}", "value": 1}] if fires else []
    return {
        "interval": format_duration(interval_s),
        "input_series": [
            {
                "series": GOOD,
                "values": f"0+{good}x{burn} {good * burn + PER_INTERVAL}+{PER_INTERVAL}x{after}",
            },
            {"series": ERRORS, "values": f"0+{errors}x{burn} {errors * burn}+0x{after}"},
        ],
        "promql_expr_test": [
            # the long window is full of the burn: both windows read errors / PER_INTERVAL
            {
                "expr": _firing(alert),
                "eval_time": format_duration(alert.long_window_s + alert.short_window_s),
                "exp_samples": during,
            },
            {"expr": _firing(alert), "eval_time": format_duration(stop_s), "exp_samples": during},
            # one short window (and a sample) after the errors stopped: resolved
            {
                "expr": _firing(alert),
                "eval_time": format_duration(stop_s + (after - 1) * interval_s),
                "exp_samples": [],
            },
        ],
    }


@pytest.mark.parametrize("profile", ["production", "lab"])
def test_promtool_every_alert_fires_at_its_burn_rate_not_below_and_resolves(
    tmp_path: Path, profile: AlertProfileName
) -> None:
    alerts = ALERT_PROFILES[profile].alerts
    # the input's sample interval divides every window: 5m for production, 10s for the lab
    interval_s = 300 if profile == "production" else 10
    tests = []
    for alert in alerts:
        at_threshold = round(alert_threshold(alert.factor, TARGET) * PER_INTERVAL)  # 144, 60, 30, 10
        tests.append(_burn_then_stop(alert, at_threshold, interval_s))  # exactly its burn rate: fires
        tests.append(_burn_then_stop(alert, at_threshold - 1, interval_s))  # just below: silent
    run_promtool_tests(
        tmp_path,
        tests,
        rules=rules_yaml(profile=profile),
        evaluation_interval=format_duration(interval_s),
        timeout_s=300,
    )


def _spec_with_min_events(tmp_path: Path, min_events: int | str) -> Path:
    documents = list(yaml.safe_load_all(default_spec_path().read_text()))
    documents[0]["metadata"]["annotations"] = {ALERT_MIN_EVENTS_ANNOTATION: str(min_events)}
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True))
    return path


def _pages() -> str:
    return 'count(ALERTS{alertstate="firing",slo="availability",severity="page"})'


def test_promtool_one_failure_at_1_req_per_s_does_not_page(tmp_path: Path) -> None:
    # 5 requests every 5 s for 30 minutes; the one at minute 20 fails.
    per = 5
    n = 360
    tests = [
        {
            "interval": "5s",
            "input_series": [
                {"series": GOOD, "values": f"0+{per}x240 {per * 240 + per - 1}+{per}x{n - 241}"},
                {"series": ERRORS, "values": f"0+0x240 1+0x{n - 241}"},
            ],
            "promql_expr_test": [
                {"expr": _pages(), "eval_time": f"{t}s", "exp_samples": []} for t in range(1200, 1500, 10)
            ],
        }
    ]
    run_promtool_tests(
        tmp_path, tests, rules=rules_yaml(profile="lab"), evaluation_interval="5s", timeout_s=300
    )


@pytest.mark.parametrize(("min_events", "pages"), [(DEFAULT_ALERT_MIN_EVENTS, False), (1, True)])
def test_promtool_one_failure_at_one_request_a_minute_pages_only_without_the_minimum(
    tmp_path: Path, min_events: int, pages: bool
) -> None:
    # One request a minute; the one at minute 30 fails. Over the lab's 12m/1m page that is 1 / 12 = 8.3 % and
    # 1 / 1 = 100 %, both over 6 x 1 %: only the minimum number of events (1 < 20) keeps it from paging.
    slos = load_slo_spec(_spec_with_min_events(tmp_path, min_events))
    assert slos[0].alert_min_events == min_events
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {"series": GOOD, "values": "0+1x29 29+1x10"},
                {"series": ERRORS, "values": "0+0x29 1+0x10"},
            ],
            "promql_expr_test": [
                {
                    "expr": 'slo:sli_error:ratio_rate1m{slo="availability"}',
                    "eval_time": "30m",
                    "exp_samples": [
                        {
                            "labels": 'slo:sli_error:ratio_rate1m{slo="availability",'
                            f'objective="{slos[0].objectives[0].display_name}"}}',
                            "value": 1,
                        }
                    ],
                },
                {
                    "expr": _pages(),
                    "eval_time": "30m",
                    "exp_samples": [{"labels": "{}", "value": 1}] if pages else [],
                },
            ],
        }
    ]
    run_promtool_tests(
        tmp_path, tests, rules=rules_yaml(slos, profile="lab"), evaluation_interval="1m", timeout_s=300
    )


def test_min_events_must_be_a_positive_integer(tmp_path: Path) -> None:
    with pytest.raises(SloSpecError, match=r"slo\.yaml:\d+: SLO availability: metadata\.annotations"):
        load_slo_spec(_spec_with_min_events(tmp_path, "zero"))
    with pytest.raises(SloSpecError, match="greater than or equal to 1"):
        load_slo_spec(_spec_with_min_events(tmp_path, 0))


def test_a_timeslices_slo_gets_its_ratios_recorded_and_no_burn_rate_alerts() -> None:
    slos = load_slo_spec()
    sliced = slos[0].model_copy(update={"budgeting_method": "Timeslices"})
    rules = [r for g in generate_rules([sliced, *slos[1:]])["groups"] for r in g["rules"]]
    assert any(r.get("labels", {}).get("slo") == sliced.name and "record" in r for r in rules)
    assert not any(r.get("labels", {}).get("slo") == sliced.name and "alert" in r for r in rules)
    assert any("alert" in r for r in rules)
    assert f"No alerts for {sliced.name}: Timeslices" in rules_yaml([sliced, *slos[1:]])


def test_a_new_lab_loads_the_lab_profile_and_records_it_in_lab_json(tmp_path: Path) -> None:
    import json

    from labkit.lab.local import LocalBackend
    from tests.conftest import sim_lab_config

    backend = LocalBackend(sim_lab_config(tmp_path))
    backend._prepare_lab_dir()
    recorded = json.loads(backend.lab.config_file.read_text())["alert_profile"]
    assert recorded == {
        "name": "lab",
        "window_divisor": LAB_WINDOW_DIVISOR,
        "window_scale": 1 / LAB_WINDOW_DIVISOR,
    }
    assert (backend.lab.rules_dir / RULES_FILE_NAME).read_text() == rules_yaml(profile="lab")
