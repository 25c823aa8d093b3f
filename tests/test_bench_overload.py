"""bench/overload.py's arithmetic on made-up outcomes: what counts as an error, the per-step figures, the
rows' targets, and the generated block of docs/overload.md (the prose around it is kept). The suite itself
runs in tests/integration/test_bench_smoke.py."""

from __future__ import annotations

from pathlib import Path

from bench import overload
from bench.overload import END, START, Outcome, Step


def _step(label: str, multiple: float, statuses: list[int], reject_s: float = 0.002) -> Step:
    step = Step(label, multiple, rate=10.0 * multiple, seconds=2.0, t0=0.0)
    for i, status in enumerate(statuses):
        intended = i * 2.0 / len(statuses)
        took = 0.5 if status == 200 else reject_s
        step.outcomes.append(Outcome(intended, intended + 0.001, intended + took, status))
    step.counted_rejections = float(statuses.count(503))
    step.rss_before_mb = step.rss_after_mb = 60.0
    step.rss_max_mb = 61.0
    step.rss_samples_mb = [60.0, 61.0]
    step.series_before = step.series_after = 100
    return step


def _steps(top_statuses: list[int], reject_s: float = 0.002) -> list[Step]:
    steps = [_step(f"{m:g}x", m, [200] * 10) for m in overload.MULTIPLES[:-1]]
    steps.append(_step(f"{overload.MULTIPLES[-1]:g}x", overload.MULTIPLES[-1], top_statuses, reject_s))
    steps.append(_step("recovery 0.5x", 0.5, [200] * 10))
    return steps


ABOUT = {"baseline_rss_mb": 60.0, "final_rss_mb": 60.5, "restarted": False, "capacity_503s": 3, "step_s": 2.0}


def test_only_answers_other_than_200_and_503_are_errors() -> None:
    step = _step("5x", 5.0, [200, 503, 503, 502, 0])
    summary = step.summary()
    assert (summary["ok"], summary["rejected_503"], summary["other_errors"]) == (1, 2, 2)
    assert summary["admitted_req_per_s"] == 1.5  # the 200 and the 502 were admitted; over 2 s
    assert summary["reject_p99_ms"] is not None and summary["reject_p99_ms"] < 3


def test_rows_meet_their_targets_when_the_wrapper_behaves() -> None:
    rows = {
        r.name: r.as_json()
        for r in overload.rows_from(10.0, [10.0, 10.0], _steps([200] * 20 + [503] * 80), ABOUT)
    }
    assert all(r["target_met"] in (True, None) for r in rows.values()), rows
    assert rows["overload_admitted_errors"]["value"] == 0
    assert rows["overload_rejections_uncounted"]["value"] == 0


def test_rows_miss_their_targets_when_rejections_are_slow_or_requests_fail() -> None:
    steps = _steps([200] * 20 + [503] * 79 + [502], reject_s=0.2)
    steps[-2].counted_rejections -= 1  # one 503 the wrapper did not count
    rows = {r.name: r.as_json() for r in overload.rows_from(10.0, [10.0], steps, ABOUT | {"restarted": True})}
    assert rows["overload_reject_p99_5x_ms"]["target_met"] is False
    assert rows["overload_admitted_errors"]["target_met"] is False
    assert rows["overload_rejections_uncounted"]["value"] == 1
    assert rows["overload_recovery_failed_requests"]["target_met"] is False  # the restart


def test_the_doc_block_is_replaced_and_the_prose_kept(tmp_path: Path) -> None:
    doc = tmp_path / "overload.md"
    doc.write_text(f"# Overload\n\nprose before\n\n{START}\nold\n{END}\n\nprose after\n")
    overload.write_doc(doc, "new table")
    text = doc.read_text()
    assert "old" not in text and "new table" in text
    assert text.startswith("# Overload\n\nprose before") and text.endswith("prose after\n")


def test_the_figure_is_written(tmp_path: Path) -> None:
    figure = tmp_path / "overload.png"
    overload.write_figure(10.0, _steps([200] * 20 + [503] * 80), figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
