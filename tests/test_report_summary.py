"""The report's first screen (labkit.report.summary) on the synthetic kill-and-recover run of
test_report_data, and the verdict vocabulary (labkit.verdicts) it speaks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.report import RunData, raw_files, summary, verdict_sentences
from labkit.verdicts import MEANING, experiment_verdict, tone
from tests.test_report_data import write_chaos_run


@pytest.fixture
def run(tmp_path: Path) -> RunData:
    path = write_chaos_run(tmp_path)
    (path / "lab.json").write_text(
        json.dumps({"engine": "sim", "model": "smollm2-135m", "host": "box", "prometheus_version": "2.53.0"})
    )
    (path / "run.json").write_text(json.dumps({"status": "completed", "title": "Kill the model"}))
    return RunData.load(path)


def test_each_verdict_is_a_sentence_about_what_it_judged(run: RunData) -> None:
    rows = verdict_sentences(run)
    assert [(question, word) for question, word, _ in rows] == [
        ("Run", "completed"),
        ("Steady state", "held"),
        ("SLOs", "violated"),
    ]
    slos = rows[2][2]
    # 6 failed of 120 (availability), 20 slow of 114 (TTFT within 1.5 s, 95 % within 3 s)
    assert slos.startswith("3 of 5 objectives missed during the method")
    assert "Availability of generation requests (99% of valid requests succeed)" in slos


def test_the_first_screen_says_what_ran_and_how_it_recovered(run: RunData) -> None:
    page = summary(run).html
    assert "<h1" in page and "Kill the model" in page
    for fact in (
        "engine <b>sim</b>",
        "model <b>smollm2-135m</b>",
        "host <b>box</b>",
        "Prometheus <b>2.53.0</b>",
    ):
        assert fact in page, fact
    assert "burn rate 5.00\u00d7" in page  # 6 of 120 failed against a 1 % budget
    assert (
        "kill model at 20.0 s</b>: detected in <b>50 ms</b>, recovered in <b>3500 ms</b>; 6 requests lost"
        in page
    )
    assert "Remediation: restarted wrapper at 45.0 s" in page and "would restart wrapper at 47.0 s" in page
    assert '<a href="requests.jsonl">' in page and '<a href="prometheus">' in page
    assert ("requests.jsonl", "one line per request (client samples)") in raw_files(run)


def test_the_vocabulary() -> None:
    assert experiment_verdict("completed") == "held" and experiment_verdict("deviated") == "deviated"
    assert tone("held") == tone("met") == tone("completed") == "good"
    assert tone("violated") == tone("aborted") == "bad" and tone("not checked") == tone(None) == "neutral"
    assert all(MEANING[word] for word in ("held", "deviated", "aborted", "not checked", "met", "violated"))


def test_table_cells_are_escaped() -> None:
    from labkit.report import ReportTable

    html = ReportTable([("prompt", "<script>alert(1)</script>")], columns=["fact", "value"])._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_an_old_run_without_a_steady_state_check_reads_as_not_checked(tmp_path: Path) -> None:
    reason = "the method ran to its end (no steady-state check)"
    path = write_chaos_run(tmp_path, experiment={"verdict": "completed", "reason": reason})
    assert RunData.load(path).experiment_verdict == "not checked"
