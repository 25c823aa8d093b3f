"""Exact client-side SLIs from a hand-made DataFrame, judged against the lab's own spec (stack/slo.yaml):
availability 99 %; TTFT 95 % <= 1.5 s; latency 95 % <= 3 s and 99 % <= 5 s; ITL 95 % of gaps <= 50 ms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from labkit.measure.slo.budget import SLO_WINDOW_30D_S
from labkit.measure.slo.client import (
    SamplesError,
    count_events,
    objective_events,
    read_samples,
    requests_meeting_every_slo,
    samples_frame,
)
from labkit.measure.slo.spec import SloDefinition, load_slo_spec
from labkit.measure.slo.verdict import SloReport, check_run, evaluate_client_slos, format_report

NAN = math.nan
T0 = 1000.0

# request i is meant to leave at T0 + i
#   i status ok    ttft  e2e   itl gaps                  what it shows
ROWS = [
    (0, 200, True, 0.2, 1.0, [0.01, 0.02, 0.03]),  #      all good
    (1, 200, True, 0.3, 1.2, [0.02, 0.02]),  #            all good
    (2, 200, True, 1.5, 3.0, [0.05, 0.06]),  #            on each threshold (good); one gap over 50 ms
    (3, 200, True, 2.0, 4.0, [0.01]),  #                  TTFT over 1.5; e2e over 3 but within 5
    (4, 200, True, 0.4, 6.0, [0.2, 0.01, 0.01, 0.01]),  # e2e over 5; one slow gap
    (5, 503, False, NAN, 0.1, []),  #                     server error: bad
    (6, 0, False, NAN, 10.0, None),  #                    no response (timeout at 10 s): bad
    (7, 422, False, NAN, 0.05, []),  #                    the client's fault: not valid
    (8, 429, False, NAN, 0.05, []),  #                    rate limited: valid and bad
    (9, 200, True, 0.1, 0.8, []),  #                      one chunk: no gaps
]


def _frame(rows: list[tuple] = ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "request_id": i,
                "intended_send": T0 + i,
                "actual_send": T0 + i,
                "queue_delay_s": 0.0,
                "ttft_s": None if math.isnan(ttft) else ttft,
                "itl_s": itl,
                "e2e_s": e2e,
                "output_tokens": 1 + len(itl or []),
                "prompt_tokens": 36,
                "status": status,
                "ok": ok,
                "error_kind": None if ok else "http_5xx",
                "done_reason": "stop" if ok else None,
            }
            for i, status, ok, ttft, e2e, itl in rows
        ]
    )


@pytest.fixture(scope="module")
def slos() -> list[SloDefinition]:
    return load_slo_spec()


def _counts(frame: pd.DataFrame, slos: list[SloDefinition], name: str, index: int = 0) -> tuple[int, int]:
    slo = next(s for s in slos if s.name == name)
    return count_events(objective_events(samples_frame(frame), slo, slo.objectives[index]))


def test_event_counts_per_objective(slos: list[SloDefinition]) -> None:
    frame = _frame()
    # availability: valid = 10 - 1 (the 422) = 9; good = ok rows 0-4 and 9 = 6
    assert _counts(frame, slos, "availability") == (6, 9)
    # TTFT: ok rows with a first token (0-4, 9) = 6; <= 1.5 s: all but row 3 (2.0 s) = 5
    assert _counts(frame, slos, "time-to-first-token") == (5, 6)
    # e2e of ok rows: 1.0 1.2 3.0 4.0 6.0 0.8; <= 3 s: 4 of 6; <= 5 s: 5 of 6
    assert _counts(frame, slos, "latency", 0) == (4, 6)
    assert _counts(frame, slos, "latency", 1) == (5, 6)
    # gaps of ok rows: 3 + 2 + 2 + 1 + 4 = 12; over 50 ms: 0.06 (row 2) and 0.2 (row 4) -> 10 good
    assert _counts(frame, slos, "inter-token-latency") == (10, 12)


def test_goodput_counts_requests_meeting_every_objective(slos: list[SloDefinition]) -> None:
    meets = requests_meeting_every_slo(samples_frame(_frame()), slos)
    # ok rows 0-4, 9; row 3 fails TTFT and 3 s; row 4 fails 3 s and 5 s; row 2: 1 of 2 gaps within 50 ms
    # (50 % < 95 %); row 9 has no gaps (not held against it). Left: rows 0, 1, 9.
    assert list(meets[meets].index) == [0, 1, 9]


def test_report_of_a_violating_run(slos: list[SloDefinition]) -> None:
    report = evaluate_client_slos(_frame(), slos)
    by = {(r.slo, r.objective): r for r in report.results}
    availability = by[("availability", "99% of valid requests succeed")]
    # sli 6/9; error ratio 3/9; burn (1/3) / 0.01 = 33.33x
    assert availability.sli == pytest.approx(6 / 9)
    assert availability.error_ratio == pytest.approx(1 / 3)
    assert availability.burn_rate == pytest.approx(100 / 3)
    assert availability.met is False
    # budget left if these 9 events were a whole window: 1 - 3 / (0.01 * 9) = -32.33
    assert availability.budget_remaining == pytest.approx(1 - 3 / 0.09)
    # The run spans T0 (first intended send) to T0 + 16 (row 6: sent at +6, 10 s to its timeout).
    assert report.duration_s == pytest.approx(16.0)
    # 9 valid per 16 s -> 9/16 * 2,592,000 = 1,458,000 events in 30 d; budget 14,580; 3 bad -> 2.0576e-4
    assert availability.budget_consumed == pytest.approx(3 / 14_580)
    assert availability.budget_consumed == pytest.approx(availability.burn_rate * 16 / SLO_WINDOW_30D_S)
    # a full 30-day budget at 33.3x lasts 30 d / 33.3 = 0.9 d
    assert availability.time_to_exhaustion_s == pytest.approx(0.9 * 86400)
    latency5 = by[("latency", "99% of requests within 5 s")]
    # 1 bad of 6 at 99 %: burn (1/6) / 0.01 = 16.67x
    assert latency5.burn_rate == pytest.approx(100 / 6)
    # goodput: rows 0, 1, 9 in 16 s; 3 of 9 valid
    assert (report.good_requests, report.valid_requests, report.requests) == (3, 9, 10)
    assert report.goodput_rps == pytest.approx(3 / 16)
    assert report.goodput_ratio == pytest.approx(1 / 3)
    assert report.verdict == "violated"
    assert {r.slo for r in report.violated} == {s.name for s in slos}


def test_scaled_alerts_are_reported_openly(slos: list[SloDefinition]) -> None:
    report = evaluate_client_slos(_frame(), slos)
    # scale = 16 s / 30 d; the 3d window becomes 16 * 3 / 30 = 1.6 s
    assert report.window_scaling["scale"] == pytest.approx(16 / SLO_WINDOW_30D_S)
    assert report.window_scaling["windows_s"]["3d"] == pytest.approx(1.6)
    assert any("scaled" in line for line in report.assumptions)
    # The last event of the run is row 6's timeout at T0 + 16: every scaled window of availability holds
    # it and nothing else, so every pair fires.
    availability = next(r for r in report.results if r.slo == "availability")
    assert all(a.firing for a in availability.alerts) and len(availability.alerts) == 4


def _good_frame() -> pd.DataFrame:
    # 100 ok requests, one per second: ttft 0.2, e2e 1.0, gaps 10 ms; request 7 takes 3.5 s
    # (1 of 100 over 3 s: 99 % >= 95 %; within 5 s).
    rows = [(i, 200, True, 0.2, 3.5 if i == 7 else 1.0, [0.01] * 10) for i in range(100)]
    return _frame(rows)


def test_report_of_a_run_that_meets_every_slo(slos: list[SloDefinition]) -> None:
    report = evaluate_client_slos(_good_frame(), slos, duration_s=100.0)
    assert report.verdict == "met"
    assert all(r.met for r in report.results)
    latency3 = next(r for r in report.results if r.objective == "95% of requests within 3 s")
    # 99 of 100: burn (1/100) / 0.05 = 0.2x; consumed 0.2 * 100 s / 30 d
    assert latency3.sli == pytest.approx(0.99)
    assert latency3.burn_rate == pytest.approx(0.2)
    assert latency3.budget_consumed == pytest.approx(0.2 * 100 / SLO_WINDOW_30D_S)
    # 99 requests met everything: request 7 misses the 3 s threshold
    assert report.good_requests == 99
    assert report.goodput_rps == pytest.approx(0.99)
    text = format_report(report)
    assert "verdict: met" in text and "latency" in text


def test_explicit_window_event_counts(slos: list[SloDefinition]) -> None:
    report = evaluate_client_slos(_frame(), slos, events_per_window={"availability": 1_000_000})
    availability = next(r for r in report.results if r.slo == "availability")
    # 3 bad / (0.01 * 1,000,000) = 3e-4
    assert availability.budget_consumed == pytest.approx(3e-4)


def test_a_run_without_streams_has_no_token_slis_and_is_not_failed_for_it(slos: list[SloDefinition]) -> None:
    rows = [(i, 200, True, NAN, 1.0, None) for i in range(20)]
    report = evaluate_client_slos(_frame(rows), slos)
    no_data = {r.slo for r in report.no_data}
    assert no_data == {"time-to-first-token", "inter-token-latency"}
    assert all(r.sli is None and r.valid == 0 for r in report.no_data)
    assert report.verdict == "met"
    assert report.good_requests == 20
    assert "no data" in format_report(report)


def test_a_run_of_client_errors_only_is_not_met(slos: list[SloDefinition]) -> None:
    report = evaluate_client_slos(_frame([(i, 422, False, NAN, 0.01, None) for i in range(3)]), slos)
    assert report.verdict == "violated" and len(report.no_data) == len(report.results)
    assert "no objective had any events" in format_report(report)


def test_samples_need_their_columns() -> None:
    with pytest.raises(SamplesError, match="ok"):
        samples_frame([{"intended_send": 1.0, "status": 200}])
    with pytest.raises(SamplesError, match="non-numeric"):
        samples_frame([{"intended_send": "soon", "status": 200, "ok": True}])


def _write_run(path: Path, frame: pd.DataFrame, *, torn: bool = False, params: dict | None = None) -> Path:
    path.mkdir()
    lines = [json.dumps(row) for row in json.loads(frame.to_json(orient="records"))]
    text = "\n".join(lines) + "\n" + ('{"request_id": 99, "intended_se' if torn else "")
    (path / "requests.jsonl").write_text(text)
    if params is not None:
        (path / "params.json").write_text(json.dumps(params))
    return path


def test_check_run_reads_jsonl_skips_a_torn_line_and_writes_slo_json(tmp_path: Path) -> None:
    # params.json as `labkit load` writes it: the spec under "load"
    params = {"load": {"spec": {"rate": 1.0, "duration_s": 100.0}}}
    run = _write_run(tmp_path / "run", _good_frame(), torn=True, params=params)
    report = check_run(run)
    assert report.requests == 100
    assert report.duration_s == 100.0 and report.duration_source == "params.json load.spec.duration_s"
    saved = json.loads((run / "slo.json").read_text())
    assert saved["verdict"] == "met"
    assert SloReport.model_validate(saved) == report


def test_read_samples_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    path.write_text('{"intended_send": 1, "status": 200, "ok": true}\nnot json\n')
    with pytest.raises(SamplesError, match=r"requests.jsonl:2"):
        read_samples(path)
    with pytest.raises(SamplesError, match="no client samples"):
        read_samples(tmp_path / "missing.jsonl")
    path.write_text("")
    with pytest.raises(SamplesError, match="no complete rows"):
        read_samples(path)


def test_timeslices_budgeting_counts_good_slices(slos: list[SloDefinition]) -> None:
    from labkit.measure.slo.spec import Objective

    # 100 requests, one a second, each done 0.5 s later; 10 s slices from the first send. Slice 0 has 2
    # failures (8 of 10 good, under the slice target 0.9: bad), slice 1 one (9 of 10: good), slice 2 five
    # (bad); the other 7 slices are clean. 8 of 10 slices good meets a target of 0.8, which 92 of 100 good
    # requests would say nothing about.
    failing = {0, 1, 10, 20, 21, 22, 23, 24}
    frame = _frame([(i, 500 if i in failing else 200, i not in failing, 0.2, 0.5, []) for i in range(100)])
    objective = Objective(
        displayName="80% of 10 s slices", target=0.8, timeSliceTarget=0.9, timeSliceWindow="10s"
    )
    availability = slos[0].model_copy(update={"budgeting_method": "Timeslices", "objectives": (objective,)})
    report = evaluate_client_slos(frame, [availability], duration_s=100.0)
    (result,) = report.results
    assert (result.good, result.valid) == (8, 10)
    assert result.met is True
    assert any("Timeslices" in line for line in report.assumptions)
    stricter = availability.model_copy(
        update={"objectives": (objective.model_copy(update={"target": 0.85}),)}
    )
    assert evaluate_client_slos(frame, [stricter], duration_s=100.0).results[0].met is False


def test_time_slices_without_events_are_no_data() -> None:
    from labkit.measure.slo.client import time_slice_events

    events = pd.DataFrame({"time": [0.5, 1.5, 30.5], "good": [True, False, True]})
    slices = time_slice_events(events, start=0.0, slice_s=10.0, slice_target=0.5)
    assert slices["time"].tolist() == [10.0, 40.0]  # slices 1 and 2 had no traffic: left out
    assert slices["good"].tolist() == [True, True]  # 1 of 2 reaches 0.5
    assert time_slice_events(events, start=0.0, slice_s=10.0, slice_target=0.6)["good"].tolist() == [
        False,
        True,
    ]
