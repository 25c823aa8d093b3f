"""The live view from hand-made run files: the follower reads only complete lines and what was appended,
the progress says the phase, elapsed and faults, the figure draws what the files hold up to now (an active
fault up to now, restarts and alerts), and the view sends one display and then updates, counted in the
output's metadata. Outside a kernel the view does nothing."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from labkit.report.live import LIVE_METADATA_KEY, LiveView, in_kernel, live_figure, live_view
from labkit.report.live_data import JsonlFollower, RunFollower
from labkit.rundir import EventKind, RunFile, RunFolder

T0 = 1_700_000_000.0  # the method's start in these runs


def append(path: Path, *rows: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)


def request(request_id: int, send: float, e2e: float, *, ok: bool = True) -> dict[str, Any]:
    return {"request_id": request_id, "intended_send": send, "actual_send": send, "e2e_s": e2e, "ok": ok,
            "status": 200 if ok else 503, "error_kind": None if ok else "http_5xx"}  # fmt: skip


def event(kind: EventKind, at: float, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "wall_time": at, **fields}


def latency_fault(kind: EventKind, at: float) -> dict[str, Any]:
    return event(kind, at, fault_id="f1", fault_kind="latency", target="wrapper", duration_s=4.0)


def write_run(path: Path) -> None:
    """A kill_and_recover-like run 6 s into its 10 s method: the steady state before (2 s) done, a latency
    fault active since 3 s, requests every half second, one failed at 4 s."""
    (path / RunFile.PARAMS).parent.mkdir(parents=True, exist_ok=True)
    (path / RunFile.PARAMS).write_text(json.dumps({
        "scenario": "kill_and_recover", "duration_s": 10,
        "experiment": {"steady_state": True, "steady_state_s": 2},
        "chaos": {"faults": [{"kind": "latency"}, {"kind": "kill"}]},
    }))  # fmt: skip
    append(
        path / RunFile.EVENTS,
        event(EventKind.EXPERIMENT_STARTED, T0 - 2.5),
        event(EventKind.STEADY_STATE_STARTED, T0 - 2.0, phase="before", duration_s=2),
        event(EventKind.STEADY_STATE, T0 - 0.1, phase="before"),
        event(EventKind.METHOD_STARTED, T0, duration_s=10),
        latency_fault(EventKind.FAULT_START, T0 + 3.0),
    )
    before = path / RunFolder.STEADY_STATE / "before" / RunFile.REQUESTS
    append(before, *(request(i, T0 - 2.0 + 0.5 * i, 0.2) for i in range(4)))
    method = [request(i, T0 + 0.5 * i, 0.2 if i < 6 else 1.5, ok=i != 8) for i in range(11)]
    append(path / RunFile.REQUESTS, *method)
    firing = {"alertname": "SloErrorBudgetBurnPage", "status": "firing", "labels": {"severity": "page"},
              "startsAt": "2023-11-14T22:13:24Z", "fingerprint": "a1", "received_unix": T0 + 4.0}  # fmt: skip
    append(path / RunFile.ALERTS, firing)


def test_a_follower_reads_complete_lines_once_and_waits_for_a_torn_one(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    follower = JsonlFollower(path)
    assert follower.read_new() == []  # no file yet
    path.write_text('{"a": 1}\n[1, 2]\n{"b": ')
    assert follower.read_new() == [{"a": 1}] and follower.skipped == 1
    assert follower.read_new() == []
    with open(path, "a") as fh:
        fh.write('2}\n{"c": 3}\n')
    assert follower.read_new() == [{"b": 2}, {"c": 3}]


def test_progress_says_the_phase_the_elapsed_time_and_the_faults(tmp_path: Path) -> None:
    write_run(tmp_path)
    follower = RunFollower(tmp_path)
    assert follower.poll() is True and follower.poll() is False
    progress = follower.progress(T0 + 6.0)
    assert progress.phase == "method" and round(progress.phase_elapsed_s) == 6
    assert progress.phase_planned_s == 10 and progress.planned_s == 14
    assert (progress.faults_applied, progress.faults_planned) == (1, 2)
    assert progress.active == ("latency wrapper",) and (progress.requests, progress.failed) == (15, 1)
    assert progress.line() == (
        "method 6/10 s · 8/14 s in all · faults 1/2 applied (active: latency wrapper) · 15 requests, 1 failed"
    )
    ends = [event(EventKind.METHOD_FINISHED, T0 + 10.0), event(EventKind.EXPERIMENT_FINISHED, T0 + 15.0)]
    append(tmp_path / RunFile.EVENTS, latency_fault(EventKind.FAULT_END, T0 + 7.0), *ends)
    follower.poll()
    done = follower.progress(T0 + 30.0)
    assert done.finished and done.phase is None and done.active == ()
    assert done.line().endswith("experiment finished") and "18/14 s in all" in done.line()


def test_the_figure_draws_the_run_up_to_now_with_the_active_fault_restarts_and_alerts(tmp_path: Path) -> None:
    write_run(tmp_path)
    follower = RunFollower(tmp_path)
    follower.poll()
    now = T0 + 6.0
    run = follower.run_data(now)
    assert run.origin == T0 and run.t_range == (-2.5, 6.0)
    (fault,) = run.faults.to_dict("records")
    assert (fault["start_t_s"], fault["end_t_s"]) == (3.0, 6.0)  # active: drawn up to now
    fig = live_figure(run, now=now, restarts=[(T0 + 5.0, "model")], alerts=follower.alerts(now), title="t")
    drawn = " ".join(" ".join(v) for v in fig.drawn.values())
    assert "p95 end-to-end latency" in drawn and "failed (1 in all, red bars)" in drawn
    assert "latency wrapper 3.0 to 6.0 s" in drawn
    assert "model restarted, seen at 5.0 s" in drawn
    assert "alert SloErrorBudgetBurnPage (page) from 4.0 s, firing" in drawn
    assert "steady state before -2.0 to -0.1 s" in drawn
    gids = {artist.get_gid() for ax in fig.axes for artist in ax.get_children()}
    assert {"fault:f1", "restart:model", "alert:SloErrorBudgetBurnPage"} <= gids
    # Nothing yet: every axes says so instead of drawing an empty frame.
    empty = live_figure(RunFollower(tmp_path / "new").run_data(now), now=now)
    assert empty.drawn["note"] == ["no data: no request answered yet"]


class FakeHandle:
    """IPython's DisplayHandle as the view uses it (the real one needs a kernel to send to)."""

    def __init__(self, shown: list[dict[str, Any]]) -> None:
        self.shown = shown

    def update(self, data: dict[str, str], *, metadata: dict[str, Any], raw: bool) -> None:
        assert raw
        self.shown.append({"data": data, "metadata": metadata})


def test_the_view_displays_once_then_counts_each_update_and_marks_the_final_figure(tmp_path: Path) -> None:
    write_run(tmp_path)
    shown: list[dict[str, Any]] = []

    def display(data: dict[str, str], metadata: dict[str, Any]) -> FakeHandle:
        shown.append({"data": data, "metadata": metadata})
        return FakeHandle(shown)

    counts = iter([{"model": 0, "wrapper": 1}, {"model": 1, "wrapper": 1}, {"model": 1, "wrapper": 1}])
    view = LiveView(tmp_path, interval_s=0.05, restarts=lambda: next(counts), display=display,
                    clock=lambda: T0 + 6.0)  # fmt: skip
    view._show()
    view._show()
    view._show(final=True)
    assert [s["metadata"][LIVE_METADATA_KEY]["updates"] for s in shown] == [0, 1, 2]
    assert [s["metadata"][LIVE_METADATA_KEY]["final"] for s in shown] == [False, False, True]
    assert view.restarts == [(T0 + 6.0, "model")]  # the count that grew, once
    png = base64.b64decode(shown[-1]["data"]["image/png"])
    assert png.startswith(b"\x89PNG") and "kill_and_recover: method 6/10 s" in shown[-1]["data"]["text/plain"]


def test_the_thread_updates_until_stopped(tmp_path: Path) -> None:
    write_run(tmp_path)
    shown: list[dict[str, Any]] = []

    def display(data: dict[str, str], metadata: dict[str, Any]) -> FakeHandle:
        shown.append({"metadata": metadata})
        return FakeHandle(shown)

    view = LiveView(tmp_path, interval_s=0.01, display=display, clock=lambda: T0 + 6.0)
    view.start()
    deadline = time.monotonic() + 60
    while view.updates < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    view.stop()
    assert view.updates >= 2
    assert shown[-1]["metadata"][LIVE_METADATA_KEY] == {
        "run": tmp_path.name,
        "updates": view.updates,
        "final": True,
    }
    assert len(shown) == view.updates + 1


def test_outside_a_kernel_the_view_does_nothing(tmp_path: Path) -> None:
    assert not in_kernel()
    with live_view(tmp_path) as view:
        assert view is None
    assert list(tmp_path.iterdir()) == []


def test_a_load_run_finishes_with_its_load(tmp_path: Path) -> None:
    (tmp_path / RunFile.PARAMS).write_text(json.dumps({"load": {"spec": {"duration_s": 10}}}))
    append(tmp_path / RunFile.EVENTS, event(EventKind.LOAD_STARTED, T0))
    append(tmp_path / RunFile.REQUESTS, request(0, T0, 0.3))
    follower = RunFollower(tmp_path)
    follower.poll()
    assert follower.progress(T0 + 4.0).line() == "4/10 s in all · 1 requests, 0 failed"
    append(tmp_path / RunFile.EVENTS, event(EventKind.LOAD_FINISHED, T0 + 10.5))
    follower.poll()
    assert follower.progress(T0 + 20.0).line() == "10/10 s in all · 1 requests, 0 failed · load finished"
