"""The lab's Grafana dashboard: the committed file is what generators.dashboard generates, its structure is
one Grafana loads, every expression parses (promtool), and its thresholds are the SLO spec's.

That every metric it reads is one the lab exports is checked against a running lab in
tests/integration/test_dashboard_metrics.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from generators.dashboard import (
    DASHBOARD_ALERT_PROFILE,
    DASHBOARD_FILE,
    DASHBOARD_UID,
    DATASOURCE_UID,
    DATASOURCE_VARIABLE,
    SCHEMA_VERSION,
    build_dashboard,
    dashboard_json,
    dashboard_queries,
    main,
    panel_table_markdown,
)
from labkit.config import stack_dir
from labkit.measure.slo.alerts import ALERT_PROFILES
from labkit.measure.slo.rules import RULES_FILE_NAME, error_ratio_record, generate_rules, rules_yaml
from labkit.measure.slo.spec import load_slo_spec

# Concrete values for Grafana's variables, so that promtool can parse the expressions. A variable not in
# this table fails the test: whoever adds one decides what it stands for.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def concrete(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")
        return GRAFANA_VARIABLES[name]

    return _VARIABLE.sub(value, expr)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return build_dashboard()


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (panel,) = [p for p in dashboard["panels"] if p["title"] == title]
    return panel


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return promtool


def _check_rules(promtool: str, path: Path, exprs: list[str]) -> subprocess.CompletedProcess[str]:
    rules = [{"record": f"dashboard:expr_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, width=1_000_000))
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False, timeout=60
    )


# ---- the committed file ----------------------------------------------------------------------------


def test_committed_dashboard_is_what_the_code_generates() -> None:
    committed = (stack_dir() / DASHBOARD_FILE).read_text(encoding="utf-8")
    assert committed == dashboard_json(), (
        "stack/grafana/dashboards/labkit.json is stale: regenerate it with "
        "python -m generators.dashboard --write"
    )


def test_main_prints_the_dashboard_and_write_puts_it_into_the_stack_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out)["uid"] == DASHBOARD_UID
    assert main(["--markdown"]) == 0
    assert capsys.readouterr().out == panel_table_markdown(build_dashboard())
    (tmp_path / "prometheus").mkdir()  # what makes a folder a stack/ for LABKIT_STACK_DIR
    shutil.copy(stack_dir() / "slo.yaml", tmp_path / "slo.yaml")
    monkeypatch.setenv("LABKIT_STACK_DIR", str(tmp_path))
    assert main(["--write"]) == 0
    assert (tmp_path / DASHBOARD_FILE).read_text(encoding="utf-8") == dashboard_json()


def test_the_panel_table_of_docs_grafana_md_is_what_the_code_generates(dashboard: dict[str, Any]) -> None:
    docs = (stack_dir().parent / "docs/grafana.md").read_text(encoding="utf-8")
    start = "<!-- generated: python -m generators.dashboard --markdown -->\n"
    table = docs.split(start, 1)[1].split("<!-- end of generated table -->", 1)[0]
    assert table == panel_table_markdown(dashboard), (
        "docs/grafana.md's panel table is stale: regenerate it with python -m generators.dashboard --markdown"
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and "**" in line]
    assert len(rows) == len(_panels(dashboard)) + 3  # every panel, then the three annotations


# ---- structure -------------------------------------------------------------------------------------


def test_top_level_keys_a_provisioned_dashboard_needs(dashboard: dict[str, Any]) -> None:
    for key in ("uid", "title", "version", "schemaVersion", "time", "refresh", "tags", "templating",
                "annotations", "panels", "timezone"):  # fmt: skip
        assert key in dashboard, key
    assert dashboard["uid"] == DASHBOARD_UID and len(dashboard["uid"]) <= 40  # Grafana's limit on a uid
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["id"] is None  # Grafana assigns its own database id
    assert dashboard["time"] == {"from": "now-30m", "to": "now"}
    assert dashboard["refresh"] in dashboard["timepicker"]["refresh_intervals"]


def test_the_datasource_variable_defaults_to_the_provisioned_prometheus(dashboard: dict[str, Any]) -> None:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == DATASOURCE_VARIABLE]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    assert variable["current"]["value"] == DATASOURCE_UID
    provisioned = yaml.safe_load(
        (stack_dir() / "grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    assert [d["uid"] for d in provisioned["datasources"]] == [DATASOURCE_UID]


def test_panel_ids_are_unique_and_every_panel_fits_the_24_column_grid(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine


def test_every_panel_and_annotation_queries_through_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    ref = {"type": "prometheus", "uid": f"${{{DATASOURCE_VARIABLE}}}"}
    for panel in _panels(dashboard):
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    prometheus_annotations = [a for a in dashboard["annotations"]["list"] if "expr" in a]
    assert {a["name"] for a in prometheus_annotations} == {"Faults active", "Restarts", "Remediation actions"}
    for annotation in prometheus_annotations:
        assert annotation["datasource"] == ref and annotation["enable"], annotation["name"]


def test_every_panel_has_a_type_unit_and_description(dashboard: dict[str, Any]) -> None:
    for panel in _panels(dashboard):
        assert panel["type"] in {"timeseries", "stat", "gauge"}, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert len(panel["description"]) > 20, panel["title"]


def test_the_panels_the_lab_promises_are_there(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(q.expr for q in dashboard_queries(dashboard))
    for needed in (
        "llm_requests_total",  # request rate, error ratio, availability
        "llm_request_duration_seconds_bucket",  # latency quantiles
        "llm_time_to_first_token_seconds_bucket",  # TTFT
        "llm_requests_in_flight",
        "lab_service_restarts_total",
        "lab_gpu_utilization_ratio",
        "lab_gpu_memory_used_bytes",
        error_ratio_record("10s"),  # burn rates from the recording rules, the lab profile's windows
        "llm_faults_active",
        "lab_remediation_actions_total",
    ):
        assert needed in exprs, needed
    latency = _panel(dashboard, "End-to-end latency p50 / p95 / p99")
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    ]


# ---- the SLO spec drives thresholds and budget panels -----------------------------------------------


def test_thresholds_are_the_slo_specs(dashboard: dict[str, Any]) -> None:
    def steps(title: str) -> list[float]:
        panel = _panel(dashboard, title)
        return [
            s["value"]
            for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            if s["value"] is not None
        ]

    slos = {s.name: s for s in load_slo_spec()}
    assert steps("End-to-end latency p50 / p95 / p99") == [o.value for o in slos["latency"].objectives]
    assert steps("Time to first token p50 / p95") == [o.value for o in slos["time-to-first-token"].objectives]
    assert steps("Availability (time range)") == [slos["availability"].objectives[0].target]
    assert steps("Error ratio vs error budget") == [
        pytest.approx(slos["availability"].objectives[0].error_budget)
    ]


def test_budget_and_burn_rate_panels_have_one_line_per_objective(dashboard: dict[str, Any]) -> None:
    objectives = [(s, o) for s in load_slo_spec() for o in s.objectives]
    for title in ("Error budget remaining (time range)", "Burn rate over 10s", "Burn rate over 2m"):
        panel = _panel(dashboard, title)
        assert len(panel["targets"]) == len(objectives), title
        for target, (_slo, objective) in zip(panel["targets"], objectives, strict=True):
            assert target["expr"].endswith(f" / {objective.error_budget:.12g}"), (title, target["expr"])
            assert objective.display_name in target["legendFormat"], title
    burn = _panel(dashboard, "Burn rate over 2m")
    assert all(t["expr"].startswith(error_ratio_record("2m") + "{slo=") for t in burn["targets"])


def test_burn_rate_panels_read_the_windows_of_the_profile_the_lab_loads(dashboard: dict[str, Any]) -> None:
    # The lab's Prometheus loads the lab profile (windows / 30): its fast page is 2m/10s, not 1h/5m.
    lab = ALERT_PROFILES[DASHBOARD_ALERT_PROFILE]
    assert DASHBOARD_ALERT_PROFILE == "lab" and rules_yaml(profile="lab") == (
        stack_dir() / "prometheus/compose/rules" / RULES_FILE_NAME
    ).read_text(encoding="utf-8")
    page = min((a for a in lab.alerts if a.severity == "page"), key=lambda a: a.long_window_s)
    assert (page.long_window, page.short_window, page.factor) == ("2m", "10s", 14.4)
    burn = [p for p in _panels(dashboard) if p["title"].startswith("Burn rate over")]
    assert [p["title"] for p in burn] == ["Burn rate over 10s", "Burn rate over 2m"]
    for panel in burn:
        steps = [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        assert steps == [None, 1.0, 6.0, 14.4]  # the profile's page factors, dashed
        assert "alert profile lab" in panel["description"]
    windows = {w for q in dashboard_queries(dashboard) for w in re.findall(r"ratio_rate(\w+)\{", q.expr)}
    assert windows == {"10s", "2m"}  # no production window (5m, 1h) left on a lab dashboard
    groups = generate_rules(load_slo_spec(), profile="lab")["groups"]
    recorded = {rule.get("record") for group in groups for rule in group["rules"]}
    assert {error_ratio_record(w) for w in windows} <= recorded


def test_a_changed_spec_changes_the_dashboard() -> None:
    slos = load_slo_spec()
    availability = next(s for s in slos if s.name == "availability")
    stricter = availability.model_copy(
        update={"objectives": (availability.objectives[0].model_copy(update={"target": 0.999}),)}
    )
    board = build_dashboard([stricter if s is availability else s for s in slos])
    steps = _panel(board, "Availability (time range)")["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == 0.999


# ---- PromQL ----------------------------------------------------------------------------------------


def test_every_expression_parses_with_promtool(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = _promtool()
    queries = dashboard_queries(dashboard)
    assert len(queries) > 30
    result = _check_rules(promtool, tmp_path / "dashboard.yml", [concrete(q.expr) for q in queries])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_promtool_check_refuses_a_broken_expression(tmp_path: Path) -> None:
    # The check above proves something only if promtool parses the expressions it is given.
    result = _check_rules(_promtool(), tmp_path / "broken.yml", ["sum by (le (rate(x[1m]))"])
    assert result.returncode != 0


def test_every_grafana_variable_in_an_expression_has_a_concrete_value(dashboard: dict[str, Any]) -> None:
    used = {
        m.group(1) or m.group(2) for q in dashboard_queries(dashboard) for m in _VARIABLE.finditer(q.expr)
    }
    assert used == {"__rate_interval", "__range"}
    with pytest.raises(AssertionError, match="unknown Grafana variable"):
        concrete("rate(x[$lab_window])")
