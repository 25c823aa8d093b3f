"""labkit.report.compare, export and serve on synthetic run directories: a shift larger than the runs' noise
is flagged and one inside it is not, --fail-on thresholds, the page and JSON; a run's tables as CSV and
Parquet with nothing lost; the reports folder over HTTP on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from labkit.cli import cli
from labkit.errors import ConfigError
from labkit.report.compare import compare_runs, parse_fail_on, write_comparison
from labkit.report.export import export_run
from labkit.report.serve import serve_reports
from labkit.rundir import RunDirectory, RunFile
from tests.test_report_data import T0, write_chaos_run


def _steady_run(parent: Path, run_id: str, e2e_ms: float, *, seed: int, failures: int = 0) -> Path:
    """200 requests with noisy end-to-end latencies around `e2e_ms` (5 % spread) and `failures` failed."""
    rng = np.random.default_rng(seed)
    run = RunDirectory.create(parent, "baseline", run_id=run_id)
    with run.jsonl_writer(RunFile.REQUESTS) as write:
        for i in range(200):
            failed = i < failures
            e2e = float(rng.normal(e2e_ms, e2e_ms * 0.05)) / 1000
            write({
                "request_id": i, "intended_send": T0 + i * 0.25, "actual_send": T0 + i * 0.25,
                "ok": not failed,
                "status": 503 if failed else 200, "e2e_s": e2e, "ttft_s": None if failed else e2e / 4,
                "itl_s": [] if failed else [e2e / 20] * 5, "error_kind": "http_5xx" if failed else None,
            })  # fmt: skip
    return run.path


def test_noise_is_not_flagged_and_a_real_shift_is(tmp_path: Path) -> None:
    base = _steady_run(tmp_path, "a", 500, seed=1)
    same = _steady_run(tmp_path, "b", 500, seed=2)  # another draw of the same distribution
    slower = _steady_run(tmp_path, "c", 650, seed=3, failures=8)
    comparison = compare_runs([base, same, slower], seed=0)
    findings_b = [d.finding for d in comparison.diffs["b"]]
    # 200 requests: a p99 has 2 above it, too few to compare (MIN_TAIL); everything else is noise.
    assert findings_b == ["no difference"] * 3 + ["not comparable"] + ["no difference"] * 2
    findings = {d.metric: d for d in comparison.diffs["c"]}
    assert findings["e2e_p50_ms"].finding == "regression" and 120 < findings["e2e_p50_ms"].difference < 180
    assert findings["e2e_p50_ms"].low > 0  # the interval excludes zero
    assert findings["availability_pct"].finding == "regression"  # 8 of 200 failed against none
    assert findings["availability_pct"].difference == pytest.approx(-4.0)
    assert comparison.failed  # no --fail-on: any flagged regression fails
    # A threshold above the shift lets it pass; each metric fails on its own threshold.
    lenient = compare_runs([base, slower], fail_on={m: 1000.0 for m in findings})
    assert lenient.regressions and not lenient.failed


def test_a_tiny_but_consistent_shift_is_not_worth_flagging(tmp_path: Path) -> None:
    base = _steady_run(tmp_path, "a", 100, seed=1)
    shifted = _steady_run(tmp_path, "b", 103, seed=1)  # the same noise, 3 ms later: below MIN_EFFECT_MS
    (p50,) = [d for d in compare_runs([base, shifted]).diffs["b"] if d.metric == "e2e_p50_ms"]
    assert p50.low > 0 and p50.finding == "no difference" and p50.min_effect == pytest.approx(10.0, rel=0.01)


def test_the_page_and_json_say_how_it_decided(tmp_path: Path) -> None:
    base = _steady_run(tmp_path, "a", 500, seed=1)
    slower = _steady_run(tmp_path, "c", 650, seed=3)
    page = write_comparison(compare_runs([base, slower]), tmp_path / "out")
    text = page.read_text()
    assert "resampled with replacement 2000 times" in text and "regression" in text
    assert 'alt="End-to-end latency distribution of each run' in text and "<script" not in text
    data = json.loads(page.with_suffix(".json").read_text())
    assert data["runs"] == ["a", "c"] and data["failed"] is True and "resampled" in data["method"]


def test_recovery_is_shown_per_fault(tmp_path: Path) -> None:
    one, two = write_chaos_run(tmp_path / "1"), write_chaos_run(tmp_path / "2", run_id="again")
    with pytest.raises(ConfigError, match="named alike"):
        compare_runs([one, one])
    comparison = compare_runs([one, two])
    kill = comparison.recovery[0]
    assert (kill["fault"], kill["kind"], kill["target"]) == (1, "kill", "model")
    assert kill["runs"][one.name]["requests_lost"] == 6


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least two"):
        compare_runs([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no client samples"):
        compare_runs([tmp_path / "empty", tmp_path / "empty"])
    with pytest.raises(ConfigError, match="METRIC=THRESHOLD"):
        parse_fail_on(["p95=3"])
    assert parse_fail_on(["e2e_p95_ms=50"]) == {"e2e_p95_ms": 50.0}


def test_the_cli_exits_1_only_on_a_regression_beyond_fail_on(tmp_path: Path) -> None:
    base = _steady_run(tmp_path, "a", 500, seed=1)
    slower = _steady_run(tmp_path, "c", 650, seed=3)
    args = ["compare", str(base), str(slower), "--out", str(tmp_path / "out"), "--resamples", "500"]
    failing = CliRunner().invoke(cli, [*args, "--fail-on", "e2e_p50_ms=100"])
    assert failing.exit_code == 1 and "end-to-end p50 regression" in failing.output
    passing = CliRunner().invoke(cli, [*args, *(f"--fail-on={m}=1000" for m in ("e2e_p50_ms", "e2e_p95_ms",
                                 "e2e_p99_ms", "ttft_p95_ms", "itl_p95_ms"))])  # fmt: skip
    assert passing.exit_code == 0, passing.output
    assert CliRunner().invoke(cli, ["compare", str(base)]).exit_code == 2  # a usage error, not a regression


def test_export_writes_every_table_in_both_formats(tmp_path: Path) -> None:
    run = write_chaos_run(tmp_path)
    csv = export_run(run, "csv")
    parquet = export_run(run, "parquet", tmp_path / "pq")
    assert [p.stem for p in csv] == [p.stem for p in parquet]
    assert {"requests", "events", "slo", "recovery", "prometheus_availability"} <= {p.stem for p in csv}
    requests = pd.read_parquet(tmp_path / "pq" / "requests.parquet")
    assert len(requests) == 120 and list(requests["itl_s"].iloc[0]) == [0.02, 0.02]  # lists stay lists
    assert json.loads(pd.read_csv(run / "export" / "csv" / "requests.csv")["itl_s"].iloc[0]) == [0.02, 0.02]
    events = pd.read_parquet(tmp_path / "pq" / "events.parquet")
    assert events.loc[events["kind"] == "method_started", "t_s"].iloc[0] == 0.0  # the report's clock
    with pytest.raises(ConfigError, match="--format"):
        export_run(run, "xlsx")


def test_serve_answers_the_index_on_loopback_only(tmp_path: Path) -> None:
    write_chaos_run(tmp_path / "reports" / "runs")
    server = serve_reports(tmp_path / "reports", port=0)
    server.start()
    try:
        front = httpx.get(server.url, timeout=10, trust_env=False)
        assert front.status_code == 200 and "labkit runs" in front.text
        listing = httpx.get(server.url + "runs/", timeout=10, trust_env=False)  # a report links its folders
        assert listing.status_code == 200 and "20231114T221320.00Z-kill_and_recover" in listing.text
    finally:
        server.shutdown()
        server.server_close()
    assert server.url.startswith("http://127.0.0.1:")
    with pytest.raises(ConfigError, match="loopback"):
        serve_reports(tmp_path / "reports", host="0.0.0.0")
    with pytest.raises(ConfigError, match="no reports folder"):
        serve_reports(tmp_path / "nowhere")
