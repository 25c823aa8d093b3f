"""bench/'s arithmetic and its report: targets, quantiles, spreads, and the table written between the markers
of docs/benchmarks.md (the hand-written text around them is kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench._common import Row, Target, quantile, spread
from bench._report import END, START, write_markdown


def test_targets_compare_the_right_figure() -> None:
    at_most = Target("value_max", 3.0, "<= 3 s")
    assert at_most.met(3.0, None, None) is True
    assert at_most.met(3.01, None, None) is False
    assert at_most.met(None, None, None) is None
    at_least = Target("ratio_min", 0.8, ">= 0.8 x")
    assert at_least.met(80, 100, 0.8) is True
    assert at_least.met(79, 100, 0.79) is False
    over = Target("over_reference_max", 1.0, "<= reference + 1 s")
    assert over.met(3.0, 2.0, 1.5) is True
    assert over.met(3.1, 2.0, 1.55) is False
    assert over.met(3.0, None, None) is None


def test_row_json_has_every_field_of_the_table() -> None:
    row = Row(
        "x",
        "a thing",
        "ms",
        2.0,
        reference=4.0,
        spread=spread([1.0, 3.0]),
        target=Target("ratio_min", 0.25, "t"),
    )
    data = row.as_json()
    assert {"name", "value", "reference", "ratio", "spread", "target", "target_met"} <= set(data)
    assert data["ratio"] == 0.5 and data["target_met"] is True
    assert data["spread"] == {"low": 1.0, "high": 3.0, "rounds": 2}
    assert Row("y", "no reference", "s", 1.0).as_json()["ratio"] is None
    assert (
        Row("z", "not measured", "s", None, target=Target("value_max", 1, "t")).as_json()["target_met"]
        is None
    )


def test_quantile_interpolates_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert quantile(values, 0.5) == 2.5
    assert quantile(values, 0.0) == 1.0 and quantile(values, 1.0) == 4.0
    assert quantile(values, 0.99) == pytest.approx(3.97)
    with pytest.raises(ValueError):
        quantile([], 0.5)


def _result(smoke: bool = False) -> dict:
    row = Row(
        "up_sim_s", "labkit up", "s", 2.0, spread=spread([1.9, 2.2]), target=Target("value_max", 3, "<= 3 s")
    )
    return {
        "measured_at": "2026-11-28T00:00:00Z",
        "smoke": smoke,
        "seconds": 12.0,
        "machine": {"cpus_allowed": 2, "cpu_model": "cpu", "memory_gib": 24, "python": "3.11",
                    "prometheus": "p", "load_average_at_start": [0.1, 0.1, 0.1]},
        "suites": {"lab": {"seconds": 12.0, "error": None, "rows": ["up_sim_s"]},
                   "model": {"seconds": 1.0, "error": "RuntimeError: boom", "rows": []}},
        "rows": [row.as_json()],
    }  # fmt: skip


def test_markdown_table_replaces_only_the_marked_block(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        f"# Benchmarks\n\nMethod by hand.\n\n{START}\nold table\n{END}\n\nProfile notes by hand.\n"
    )
    write_markdown(doc, _result())
    text = doc.read_text()
    assert "Method by hand." in text and "Profile notes by hand." in text and "old table" not in text
    assert "| labkit up | 2 s | - | - | 1.9 - 2.2, 2 rounds | <= 3 s | yes |" in text
    assert "Suite `model` FAILED: RuntimeError: boom" in text
    write_markdown(doc, _result())  # idempotent: one block, still between the markers
    assert doc.read_text().count(START) == 1


def test_markdown_says_when_numbers_are_smoke(tmp_path: Path) -> None:
    doc = tmp_path / "new" / "benchmarks.md"
    write_markdown(doc, _result(smoke=True))
    assert "SMOKE" in doc.read_text()


def test_only_merges_its_suites_into_the_results_already_there(tmp_path: Path) -> None:
    from bench.__main__ import _merge

    path = tmp_path / "results.json"
    old = _result()
    old["suites"] = {
        "wrapper": {"seconds": 5.0, "error": None, "rows": ["w1"], "measured_at": "2026-11-27T00:00:00Z"},
        "lab": {"seconds": 12.0, "error": None, "rows": ["up_sim_s"], "measured_at": "2026-11-27T00:00:00Z"},
    }
    old["rows"] = [Row("w1", "wrapper", "ms", 3.0).as_json(), *old["rows"]]
    path.write_text(json.dumps(old))
    new = _result()
    new["suites"] = {
        "wrapper": {"seconds": 6.0, "error": None, "rows": ["w2"], "measured_at": "2026-11-28T00:00:00Z"}
    }
    new["rows"] = [Row("w2", "wrapper again", "ms", 2.0).as_json()]
    merged = _merge(path, new)
    assert [r["name"] for r in merged["rows"]] == ["w2", "up_sim_s"]  # suite order: wrapper, then lab
    assert merged["suites"]["lab"]["measured_at"] == "2026-11-27T00:00:00Z"
    doc = tmp_path / "b.md"
    write_markdown(doc, merged)
    assert "between 2026-11-27T00:00:00Z and 2026-11-28T00:00:00Z" in doc.read_text()


def test_a_failed_only_rerun_keeps_the_suites_rows_and_says_it_failed(tmp_path: Path) -> None:
    from bench.__main__ import _merge

    path = tmp_path / "results.json"
    old = _result()
    old["suites"] = {
        "soak": {"seconds": 3700.0, "error": None, "rows": ["s1"], "measured_at": "2026-12-03T00:00:00Z"}
    }
    old["rows"] = [Row("s1", "soak", "%/h", 3.0).as_json()]
    path.write_text(json.dumps(old))
    new = _result()
    new["measured_at"] = "2026-12-04T00:00:00Z"
    new["suites"] = {"soak": {"seconds": 9.0, "error": "ConfigError: too long", "rows": []}}
    new["rows"] = []
    merged = _merge(path, new)
    assert [r["name"] for r in merged["rows"]] == ["s1"]
    assert merged["suites"]["soak"]["measured_at"] == "2026-12-03T00:00:00Z"
    doc = tmp_path / "b.md"
    write_markdown(doc, merged)
    text = doc.read_text()
    assert "rerun at 2026-12-04T00:00:00Z FAILED (ConfigError: too long)" in text
    assert "measured at 2026-12-03T00:00:00Z" in text


def test_soak_growth_is_the_least_squares_slope_after_the_warm_up() -> None:
    import pandas as pd

    from bench.soak import growth_per_hour

    # 100 MB flat during the warm-up's first 10 minutes (noise ignored), then +10 MB per hour exactly.
    rows = [
        {"t_s": t, "rss": 100e6 + (0 if t < 600 else (t - 600) / 3600 * 10e6)} for t in range(0, 4200, 60)
    ]
    rows[3]["rss"] = 500e6  # a spike inside the warm-up does not count
    growth = growth_per_hour(pd.DataFrame(rows), "rss", warmup_s=600)
    assert growth["per_hour"] == pytest.approx(10e6)
    assert growth["pct_per_hour"] == pytest.approx(100 * 10e6 / growth["mean"])
    assert growth_per_hour(pd.DataFrame(rows[:12]), "rss", warmup_s=600)["per_hour"] is None


def test_a_soak_longer_than_one_run_is_back_to_back_runs_within_the_cap() -> None:
    from bench.soak import SoakSettings, legs
    from labkit.chaos import MAX_RUN_S

    assert legs(3600) == [3600]
    assert legs(SoakSettings.duration_s) == [SoakSettings.duration_s / 2] * 2
    assert all(0 < leg <= MAX_RUN_S for leg in legs(4 * MAX_RUN_S + 1))
    assert sum(legs(4 * MAX_RUN_S + 1)) == pytest.approx(4 * MAX_RUN_S + 1)
    assert SoakSettings.duration_s - SoakSettings.warmup_s == 3600  # an hour measured after the warm-up


def test_soak_cpu_counts_each_process_from_its_own_start() -> None:
    import pandas as pd

    from bench.soak import cpu_cores

    # Half a core for 20 minutes; the process restarts at 900 s and its CPU count starts again at 0.
    rows = [{"t_s": t, "pid": 1 if t < 900 else 2, "cpu_s": (t if t < 900 else t - 900) * 0.5}
            for t in range(0, 1260, 60)]  # fmt: skip
    assert cpu_cores(pd.DataFrame(rows), warmup_s=0) == pytest.approx(0.5)
    assert cpu_cores(pd.DataFrame(rows[:1]), warmup_s=0) is None


def test_tsdb_block_ranges_and_bound_follow_prometheus_compaction() -> None:
    from bench.tsdb_blocks import block_ranges_s, blocks_bound

    minute, hour = 60.0, 3600.0
    # The lab: 30m blocks, 1 day of retention; the largest block is the largest range below a tenth of it.
    assert block_ranges_s(24 * hour, 30 * minute) == [30 * minute, 90 * minute]
    assert blocks_bound(24 * hour, 30 * minute) == 16 + 2 + 2
    # Prometheus' defaults (2h blocks, 15 days, so 36h at most): 2h, 6h and 18h blocks.
    assert block_ranges_s(15 * 24 * hour, 2 * hour) == [2 * hour, 6 * hour, 18 * hour]
    # A retention below ten blocks' length keeps the blocks as written; an explicit maximum caps the ranges.
    assert block_ranges_s(3 * hour, 30 * minute) == [30 * minute]
    assert blocks_bound(6 * minute, minute, 3 * minute) == 2 + 2 + 2


def test_only_the_files_of_a_tsdb_block_count_as_block_files(tmp_path: Path) -> None:
    import psutil

    from bench.tsdb_blocks import block_files

    block = tmp_path / "data" / "01JF3M4N5P6Q7R8S9T0VWXYZAB"
    (block / "chunks").mkdir(parents=True)
    (block / "index").write_bytes(b"i")
    (block / "chunks" / "000001").write_bytes(b"c")
    (tmp_path / "data" / "wal").mkdir()
    (tmp_path / "data" / "wal" / "00000000").write_bytes(b"w")
    me = [psutil.Process()]
    before = block_files(me)
    wal = tmp_path / "data" / "wal" / "00000000"
    with (block / "index").open("rb"), (block / "chunks" / "000001").open("rb"), wal.open("rb"):
        assert block_files(me) == before + 2
    assert block_files(me) == before


def test_the_bare_python_hop_passes_answers_through_whole_and_streamed(tmp_path: Path) -> None:
    """bench/python_hop.py is a row of the gateways table: it must forward for real, streams included."""
    import os

    import httpx

    from bench.gateways import Endpoint, body, gateways

    with gateways(tmp_path, set(os.sched_getaffinity(0)), smoke=True) as (_direct, found):
        hop = found["python_hop"]
        assert isinstance(hop, Endpoint)  # gateways() already had it answer one chat completion
        headers = {"Content-Type": "application/json"}
        whole = httpx.post(hop.url, content=body(False), headers=headers, timeout=30, trust_env=False)
        assert whole.status_code == 200 and whole.headers["content-type"].startswith("application/json")
        assert whole.json()["choices"][0]["message"]["content"]
        streamed = httpx.post(hop.url, content=body(True), headers=headers, timeout=30, trust_env=False)
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert len(events) >= 2 and events[-1] == "data: [DONE]"
        missing = httpx.post(hop.url.replace("/chat/completions", "/nowhere"), content=b"{}", trust_env=False)
        assert missing.status_code == 404  # the upstream's answer, passed on
