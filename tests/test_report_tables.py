"""labkit.report.tables on the synthetic kill-and-recover run of test_report_data (120 requests, 6 failed
during the kill, 20 slow during the latency fault)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labkit.measure.histograms import bucket_quantile
from labkit.measure.slo import SERVER_SLI_COLUMNS, explain_client_server, load_slo_spec
from labkit.report import (
    AB_HEADLINE_KEYS,
    CLIENT_SERVER_COLUMNS,
    RECOVERY_TABLE_COLUMNS,
    SLO_TABLE_COLUMNS,
    RunData,
    client_server_table,
    headline,
    overview_table,
    recovery_table,
    slo_table,
)
from labkit.rundir import RunDirectory, RunFile
from tests.test_report_data import KILL_AT, LATENCY, T0, request_rows, write_chaos_run


def _row(table: pd.DataFrame, slo: str) -> pd.Series:
    """The first objective of the SLO whose display name starts with `slo`."""
    return table.loc[table["SLO"].str.startswith(slo)].iloc[0]


def test_slo_table_from_slo_json(tmp_path: Path) -> None:
    table = slo_table(RunData.load(write_chaos_run(tmp_path)))
    assert list(table.columns) == list(SLO_TABLE_COLUMNS)
    assert len(table) == sum(len(s.objectives) for s in load_slo_spec())
    availability = _row(table, "Availability")
    assert availability["SLI (%)"] == pytest.approx(round(114 / 120 * 100, 3))
    assert availability["target (%)"] == 99.0
    assert availability["verdict"] == "violated"
    assert (availability["good"], availability["valid"]) == (114, 120)
    # 6 bad events against a 1 % budget of the 30-day window's events (the run's rate extrapolated):
    # 6 / (0.01 * 120 * 30 d / 60 s) of the budget.
    expected = 6 / (0.01 * 120 * (30 * 86400 / 60.0)) * 100
    assert availability["budget consumed (% of 30 d)"] == pytest.approx(expected, abs=1e-4)
    assert availability["burn rate (\u00d7)"] == pytest.approx((6 / 120) / 0.01)  # error ratio / budget


def test_slo_table_judges_the_samples_without_slo_json(tmp_path: Path) -> None:
    table = slo_table(RunData.load(write_chaos_run(tmp_path, slo=False)))
    latency = table.loc[table["objective"] == "95% of requests within 3 s"].iloc[0]
    assert (latency["valid"], latency["good"]) == (114, 94)  # 20 of the 114 successful ones took 4 s
    assert latency["verdict"] == "violated"
    within_5s = table.loc[table["objective"] == "99% of requests within 5 s"].iloc[0]
    assert (within_5s["good"], within_5s["verdict"]) == (114, "met")
    assert _row(table, "Availability")["verdict"] == "violated"


def test_slo_table_of_an_empty_run_is_empty_with_its_columns(tmp_path: Path) -> None:
    table = slo_table(RunData.load(tmp_path))
    assert table.empty and list(table.columns) == list(SLO_TABLE_COLUMNS)


def test_recovery_table_per_fault(tmp_path: Path) -> None:
    table = recovery_table(RunData.load(write_chaos_run(tmp_path))).set_index("fault")
    assert list(table.reset_index().columns) == list(RECOVERY_TABLE_COLUMNS)
    kill = table.loc["f1"]
    assert (kill["kind"], kill["target"]) == ("kill", "model")
    assert kill["start (s)"] == KILL_AT and kill["end (s)"] == KILL_AT  # on the run's time axis
    assert kill["time to detect (ms)"] == pytest.approx(50)
    assert kill["time to recover (ms)"] == pytest.approx(3500)
    assert kill["requests lost"] == 6 and kill["outcome"] == "recovered"
    latency = table.loc["f2"]
    assert (latency["start (s)"], latency["end (s)"]) == LATENCY
    assert latency["requests slow"] == 20 and latency["requests lost"] == 0
    pause = table.loc["f3"]
    assert pause["outcome"] == "not noticed" and pd.isna(pause["time to detect (ms)"])


def test_a_fault_without_recovery_by_the_end(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    rows = request_rows()
    for row in rows[-4:]:  # the last four requests fail too: the pause fault is "answerable" for them
        row.update(ok=False, status=0, e2e_s=0.05, ttft_s=None)
    (path / "requests.jsonl").unlink()
    run_dir = RunDirectory(path)
    for row in rows:
        run_dir.append_jsonl(RunFile.REQUESTS, row)
    table = recovery_table(RunData.load(path)).set_index("fault")
    assert table.loc["f3", "outcome"] == "not recovered by the end of the run"
    assert table.loc["f3", "requests lost"] == 4


def test_recovery_table_of_a_run_without_faults_is_empty(tmp_path: Path) -> None:
    assert recovery_table(RunData.load(tmp_path)).empty


def _write_comparison(path: Path) -> None:
    """The server counted 114 of 114 (the 6 requests refused during the kill never reached it)."""
    slos = load_slo_spec()
    rows = []
    for slo in slos:
        for objective in slo.objectives:
            total = 114.0 if slo.metric != "llm_inter_token_latency_seconds" else 228.0
            good = total if slo.indicator == "ratio" else total - 20.0 * (total / 114.0)
            rows.append({"slo": slo.name, "objective": objective.display_name, "indicator": slo.indicator,
                         "target": objective.target, "threshold_s": objective.value or math.nan, "good": good,
                         "total": total, "sli": good / total, "counter_resets": 0, "promql": ""})  # fmt: skip
    server = pd.DataFrame(rows, columns=list(SERVER_SLI_COLUMNS))
    buckets = {0.5: 94.0, 1.0: 94.0, 5.0: 114.0, math.inf: 114.0}
    quantiles = {s.metric: bucket_quantile(0.95, buckets) for s in slos if s.metric}
    comparison = explain_client_server(pd.DataFrame(request_rows()), server, quantiles, T0, T0 + 70, slos)
    (path / "prometheus" / "client_vs_server.csv").write_text(comparison.to_csv(index=False))


def test_client_server_table_side_by_side(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    _write_comparison(path)
    table = client_server_table(RunData.load(path))
    assert list(table.columns) == list(CLIENT_SERVER_COLUMNS)
    availability = table.loc[table["SLO"] == "availability"].iloc[0]
    assert availability["client SLI (%)"] == pytest.approx(95.0)
    assert availability["server SLI (%)"] == pytest.approx(100.0)
    assert availability["difference (points)"] == pytest.approx(-5.0)
    assert "6 requests got no HTTP response" in availability["explanation"]
    assert availability["server bucket (ms)"] == "\u2013"  # a ratio SLO has no quantile
    latency = table.loc[table["SLO"] == "latency"].iloc[0]
    assert latency["server bucket (ms)"] == "(1000, 5000]"
    assert latency["client p95 (ms)"] == pytest.approx(4000.0)  # 20 of 114 successful requests took 4 s


def test_client_server_table_without_the_csv_is_empty(tmp_path: Path) -> None:
    table = client_server_table(RunData.load(write_chaos_run(tmp_path)))
    assert table.empty and list(table.columns) == list(CLIENT_SERVER_COLUMNS)


def test_headline_numbers_are_exact_client_side(tmp_path: Path) -> None:
    numbers = headline(RunData.load(write_chaos_run(tmp_path)))
    ok = [r for r in request_rows() if r["ok"]]
    # Nearest rank: the smallest value with at least 95 % of the values at or below it.
    e2e = np.sort([r["e2e_s"] for r in ok])
    ttft = np.sort([r["ttft_s"] for r in ok])
    rank = math.ceil(0.95 * len(ok)) - 1
    assert numbers == {
        "availability": pytest.approx(114 / 120),
        "e2e_p95_s": pytest.approx(e2e[rank]),
        "ttft_p95_s": pytest.approx(ttft[rank]),
        "requests": 120,
        "verdict": "held",  # the journal's experiment_finished
        "steady_state": "held",
        "slos": "violated",
        "time_to_page_s": None,  # no alerts.jsonl: no alert numbers
        "false_pages": None,
        **dict.fromkeys(AB_HEADLINE_KEYS),  # not a remediation A/B: no verdicts
        "max_rate_meeting_slos": None,  # no capacity.json: no capacity
        "max_rate_meeting_slos_low": None,
        "max_rate_meeting_slos_high": None,
        "limiting_slo": None,
    }
    assert numbers["e2e_p95_s"] == 4.0 and numbers["ttft_p95_s"] == 3.6


def test_headline_without_samples_uses_slo_json(tmp_path: Path) -> None:
    path = write_chaos_run(tmp_path)
    (path / "requests.jsonl").unlink()
    numbers = headline(RunData.load(path))
    assert numbers["availability"] == pytest.approx(114 / 120) and numbers["requests"] == 120
    assert numbers["e2e_p95_s"] is None and numbers["slos"] == "violated"


def test_headline_of_an_empty_run_is_unknown(tmp_path: Path) -> None:
    assert headline(RunData.load(tmp_path)) == {
        "availability": None,
        "e2e_p95_s": None,
        "ttft_p95_s": None,
        "requests": None,
        "verdict": None,
        "steady_state": None,
        "slos": None,
        "time_to_page_s": None,
        "false_pages": None,
        **dict.fromkeys(AB_HEADLINE_KEYS),  # not a remediation A/B: no verdicts
        "max_rate_meeting_slos": None,
        "max_rate_meeting_slos_low": None,
        "max_rate_meeting_slos_high": None,
        "limiting_slo": None,
    }


def test_the_overview_says_what_ran_and_its_headline_for_people(tmp_path: Path) -> None:
    run_dir = tmp_path / "20261127T120000.000Z-kill_and_recover"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(
        json.dumps({"scenario": "kill_and_recover", "status": "completed", "parameters": {"duration_s": 20}})
    )
    rows = [
        {"intended_send": 1.7e9 + i, "e2e_s": 0.5, "ttft_s": 0.1, "ok": i != 3, "status": 200}
        for i in range(10)
    ]
    (run_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = overview_table(RunData.load(run_dir)).set_index("fact")
    assert table.loc["scenario", "value"] == "kill_and_recover"
    assert table.loc["status", "value"] == "completed"
    assert table.loc["requests", "value"] == "10"
    assert table.loc["availability", "value"] == "90.00%"
    assert table.loc["p95 end-to-end", "value"] == "500 ms"
    assert table.loc["parameters", "value"] == "duration_s=20"
    html = overview_table(RunData.load(run_dir))._repr_html_()
    assert "<th" in html and "blank" not in html and ">0<" not in html  # no index column
