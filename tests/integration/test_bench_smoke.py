"""`python -m bench --smoke` runs every suite end to end with tiny parameters, so the benchmark cannot rot.
It measures nothing worth reading and nothing here asserts a time: the figures live in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SUITES

pytestmark = [pytest.mark.integration, pytest.mark.llama]

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"name", "value", "reference", "ratio", "spread", "target", "target_met"}


@pytest.mark.timeout(900)
def test_bench_smoke_runs_every_suite_and_writes_both_files(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["smoke"] is True
    assert set(result["suites"]) == set(SUITES)
    assert all(s["error"] is None and s["rows"] for s in result["suites"].values()), result["suites"]
    rows = result["rows"]
    for row in rows:
        assert set(row) >= FIELDS, row
        assert row["value"] is not None, row  # every figure was measured, none skipped
        assert row["spread"] is not None, row
        if row["reference_what"]:
            assert row["reference"] is not None and row["ratio"] is not None, row
    names = {row["name"] for row in rows}
    expected = {
        "wrapper_added_median_nostream_ms", "wrapper_added_p99_stream_ms",
        "wrapper_throughput_sim_zero_delay", "embedded_tokens_per_s_stream", "load_generator_max_rate",
        "up_sim_s", "recovery_sim_s", "memory_sim_rss_mb",
        "overload_capacity_req_per_s", "overload_reject_p99_5x_ms", "overload_admitted_errors",
        "overload_rejections_uncounted", "overload_rss_peak_mb", "overload_recovery_failed_requests",
        "openai_load_vs_aiperf_ttft_ms", "openai_load_vs_aiperf_itl_ms",
        "openai_load_vs_aiperf_tokens_per_s_user", "wrapper_openai_upstream_tokens_per_s",
        "gateway_wrapper_added_median_nostream_ms", "gateway_wrapper_added_p99_stream_ms",
        "gateway_wrapper_throughput_zero_delay", "gateway_wrapper_cpu_ms_per_request",
        "gateway_wrapper_rss_mb",
    }  # fmt: skip
    assert expected <= names, expected - names
    table = (tmp_path / "benchmarks.md").read_text()
    assert "SMOKE" in table
    for row in rows:
        assert row["what"].split(" (")[0][:40] in table, row["what"]
    # No lab left behind: every suite took down what it started.
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftover.stdout == "", leftover.stdout
