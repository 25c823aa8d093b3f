"""labkit.report.write_index on a reports directory with a finished run, a run without run.json, a broken
run and a failed one: order, links, headline numbers, escaping, self-containment."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from labkit.report import compact_parameters, write_index
from labkit.rundir import RunDirectory
from tests.test_report_data import write_chaos_run

NEW = "20240301T100000.00Z-baseline"
OLD = "20240101T100000.00Z-kill_and_recover"
BROKEN = "20240201T100000.00Z-random_chaos"
FAILED = "20240215T100000.00Z-latency_and_remediation"


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    runs = tmp_path / "reports" / "runs"
    new = RunDirectory.create(runs, "baseline", run_id=NEW)
    new.write_json(
        "run.json",
        {
            "run_id": NEW,
            "scenario": "baseline",
            "status": "completed",
            "started_at": "2024-03-01T10:00:00+00:00",
            "parameters": {"duration_s": 30, "engine": "<script>alert(1)</script>", "lab_dir": ""},
            "verdict": "met",
            "headline": {"availability": 0.999, "e2e_p95_s": 0.4567, "ttft_p95_s": 0.05, "requests": 60},
        },
    )
    (new.path / "report.html").write_text("<html></html>")
    write_chaos_run(runs, run_id=OLD)  # no run.json: everything computed from its files
    broken = RunDirectory.create(runs, "random_chaos", run_id=BROKEN)
    (broken.path / "run.json").write_text("{torn")
    (broken.path / "requests.jsonl").write_text('{"not": "a sample"}\n')
    failed = RunDirectory.create(runs, "latency_and_remediation", run_id=FAILED)
    failed.write_json(
        "run.json",
        {"status": "failed", "error": {"cell": 4, "ename": "LabNotRunningError", "evalue": "no lab <here>"}},
    )
    (runs / ".partial-tmp").mkdir()  # hidden: not a run
    return tmp_path / "reports"


def _rows(page: str) -> list[str]:
    body = page.split('<table id="runs">', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)


def test_every_run_is_listed_newest_first(reports: Path) -> None:
    page = write_index(reports).read_text()
    assert (reports / "index.html").is_file()
    rows = _rows(page)
    order = [next(run for run in (NEW, OLD, BROKEN, FAILED) if run in row) for row in rows]
    assert order == [NEW, FAILED, BROKEN, OLD]
    assert ".partial-tmp" not in page


def test_a_report_is_linked_only_where_it_exists(reports: Path) -> None:
    rows = _rows(write_index(reports).read_text())
    assert f'<a href="runs/{NEW}/report.html">{NEW}</a>' in rows[0]
    assert "no report.html" in rows[3] and "<a href" not in rows[3]


def test_headline_numbers_from_run_json_and_from_the_files(reports: Path) -> None:
    rows = _rows(write_index(reports).read_text())
    new, old = rows[0], rows[3]
    expected_new = ("baseline", "2024-03-01", "completed", "met", "99.90%", ">457 ms<", ">50 ms<", ">60<")
    for text in expected_new:
        assert text in new, text
    # The old run has no run.json: 114 of 120 requests succeeded, p95 4 s, slo.json says violated.
    expected_old = ("kill_and_recover", "2024-01-01", "95.00%", ">4000 ms<", ">3600 ms<", ">120<", "violated")
    for text in expected_old:
        assert text in old, text
    assert "duration_s=60" in old  # params.json when there are no notebook parameters


def test_parameters_are_escaped(reports: Path) -> None:
    page = write_index(reports).read_text()
    assert "<script>alert" not in page
    assert "engine=&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "no lab &lt;here&gt;" in page  # the error of the failed run too


def test_a_broken_or_failed_run_is_listed_with_what_is_known(reports: Path) -> None:
    rows = _rows(write_index(reports).read_text())
    failed, broken = rows[1], rows[2]
    assert "failed" in failed and "cell 4: LabNotRunningError" in failed
    assert "latency_and_remediation" in failed  # the scenario from the run id
    assert "random_chaos" in broken and "2024-02-01 10:00:00" in broken
    problems = html.unescape(broken)
    assert "run.json: unreadable" in problems and "requests.jsonl" in problems


def test_the_page_is_self_contained(reports: Path) -> None:
    page = write_index(reports).read_text()
    assert "<style>" in page and "<script>" in page  # the sorting and filtering script is inline
    assert not re.search(r"<link|<script [^>]*src|src=|https?://", page)


def test_each_slo_objective_is_a_coloured_cell(reports: Path) -> None:
    rows = _rows(write_index(reports).read_text())
    old = rows[3]  # slo.json: availability violated (95.00 %), the 5 s latency objective met
    assert re.search(
        r'<td class="num slo bad" data-sort="0.95" title="Availability of generation requests: 99% of '
        r'valid requests succeed: violated, 114 of 120 good against a 99% target">95.00%</td>',
        old,
    )
    assert re.search(r'<td class="num slo good" [^>]*>100.00%</td>', old)
    assert 'class="num slo neutral" data-sort="" title="">\u2013</td>' in rows[0]  # no slo.json, no samples


def test_an_empty_reports_directory_says_how_to_make_a_run(tmp_path: Path) -> None:
    page = write_index(tmp_path).read_text()
    assert "No runs yet" in page and "labkit run baseline" in page and "<table>" not in page


def test_compact_parameters_are_sorted_and_cut() -> None:
    assert compact_parameters({"b": 2, "a": {"x": [1, 2]}}) == 'a={"x": [1, 2]}, b=2'
    long = compact_parameters({"plan": "x" * 500})
    assert len(long) <= 70 and long.endswith("…")
