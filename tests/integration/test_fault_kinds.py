"""Every chaos fault kind against a real lab, applied by `labkit.chaos.FaultInjector` while the load generator
sends requests: its effect shows in the client's samples and in Prometheus, and once it ends the lab is
healthy again with no fault active.

kill, restart, pause, latency, error and stream_cut share one sim-engine lab (one per test class, to
save its start-up): each test starts from a healthy lab with no fault active and compares counter deltas,
so the order of the tests does not matter. cpu_stress and unload need the real model (SmolLM2 on
llama.cpp): the sim engine neither computes tokens nor has weights to load.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pandas as pd
import pytest

from labkit.chaos import ActiveFault, Fault, FaultInjector, halt_all
from labkit.config import embedded_model_path
from labkit.errors import ModelNotFoundError
from labkit.lab.contract import ServiceStatus
from labkit.lab.local import LocalBackend
from labkit.measure.load import LoadResult, LoadSpec, load_requests_frame, run_load, run_load_async
from labkit.rundir import RunDirectory, RunFile
from tests.conftest import sim_lab_config, wait_for

pytestmark = pytest.mark.integration


# ---- Prometheus ---------------------------------------------------------------------------------------
class Prometheus:
    """Instant queries against the lab's own Prometheus (scraping every second)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/api/v1/query"

    def value(self, query: str, at: float | None = None) -> float | None:
        """The one sample `query` gives (at unix time `at`, default now), or None when it gives none."""
        params: dict[str, str | float] = {"query": query}
        if at is not None:
            params["time"] = at
        body = httpx.get(self.url, params=params, timeout=5).json()
        assert body["status"] == "success", f"{query}: {body}"
        result = body["data"]["result"]
        assert len(result) <= 1, f"{query} gave {len(result)} series: {result}"
        return float(result[0]["value"][1]) if result else None

    def fresh(self, query: str, since: float, timeout_s: float = 15.0) -> float:
        """`query` once every target has been scraped after unix time `since`: for counters that have
        stopped moving, their final values."""
        scraped = f"({query}) and on() (min(timestamp(up)) > {since:.3f})"
        found: list[float] = []

        def ready() -> bool:
            value = self.value(scraped)
            if value is not None:
                found.append(value)
            return value is not None

        wait_for(ready, timeout_s, f"{query} in a scrape after {since:.3f}")
        return found[-1]

    def counter(self, query: str, since: float) -> float:
        """The sum of the series `query` selects (0 when none exists yet), scraped after `since`."""
        return self.fresh(f"sum({query}) or vector(0)", since)

    def assert_no_fault_active(self, since: float) -> None:
        """`sum(llm_faults_active)` is 0 in scrapes after `since` of both jobs that export it: the wrapper
        (latency, error, stream_cut) and the supervisor (pause, cpu_stress)."""
        query = (
            "sum(llm_faults_active)"
            " and on() (count(count by (job) (llm_faults_active)) == 2)"
            f" and on() (min(timestamp(llm_faults_active)) > {since:.3f})"
        )
        wait_for(lambda: self.value(query) == 0, 15, "sum(llm_faults_active) == 0 after the fault")


# ---- the lab a test gets -------------------------------------------------------------------------------
@dataclass
class Lab:
    """A running lab that was healthy, with no fault active, when the test began (`started`)."""

    backend: LocalBackend
    prometheus: Prometheus
    started: float

    @property
    def root(self) -> Path:
        return self.backend.lab.root

    @property
    def wrapper_url(self) -> str:
        return f"http://127.0.0.1:{self.backend.config.wrapper_port}"

    def load_spec(self, **settings: Any) -> LoadSpec:
        return LoadSpec(url=self.wrapper_url, **{"max_tokens": 8, "timeout_s": 10.0, **settings})

    def counters(self, *queries: str, since: float | None = None) -> dict[str, float]:
        since = self.started if since is None else since
        return {query: self.prometheus.counter(query, since) for query in queries}


def service(backend: LocalBackend, name: str) -> ServiceStatus:
    return next(s for s in backend.status() if s.name == name)


def wait_until_healthy(backend: LocalBackend) -> float:
    """Wait until every service of the lab is `ready`; the unix time that was seen."""
    wait_for(lambda: all(s.state == "ready" for s in backend.status()), 30, "every service ready")
    return time.time()


def healthy_lab(backend: LocalBackend) -> Iterator[Lab]:
    wait_until_healthy(backend)
    lab = Lab(backend, Prometheus(backend.config.prometheus_port), time.time())
    lab.prometheus.assert_no_fault_active(lab.started)
    try:
        yield lab
    finally:
        # A test that failed half-way must not leave its fault to the next one.
        report = halt_all(backend.lab.root)
        assert report.ok, report.summary()


@pytest.fixture(scope="class")
def sim_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    backend = LocalBackend(sim_lab_config(tmp_path_factory.mktemp("sim-lab")))
    try:
        backend.up()
        yield backend
    finally:
        backend.down()


@pytest.fixture
def sim(sim_lab: LocalBackend) -> Iterator[Lab]:
    yield from healthy_lab(sim_lab)


@pytest.fixture(scope="class")
def llama_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make setup)")
    try:
        embedded_model_path()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    backend = LocalBackend(sim_lab_config(tmp_path_factory.mktemp("llama-lab"), engine="llama"))
    try:
        backend.up()
        yield backend
    finally:
        backend.down()


@pytest.fixture
def llama(llama_lab: LocalBackend) -> Iterator[Lab]:
    yield from healthy_lab(llama_lab)


# ---- load in the background ----------------------------------------------------------------------------
class BackgroundLoad:
    """The load generator sending requests from an event loop in a thread of its own while the test applies a
    fault. Its rows can be read as they complete (requests.jsonl); `stop()` ends the run once the test has
    seen enough, as Ctrl-C would (what is still in flight is recorded as cancelled), so that a test takes
    as long as the lab needs to show the effect and recover, and no longer."""

    def __init__(self, spec: LoadSpec, parent: Path) -> None:
        self.run_dir = RunDirectory.create(parent, "load")
        self.cut_short = pd.DataFrame()  # set by stop()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-kinds-load", daemon=True)
        self._thread.start()
        self._task = asyncio.run_coroutine_threadsafe(self._start(spec), self._loop).result(timeout=10)

    async def _start(self, spec: LoadSpec) -> asyncio.Task[LoadResult]:
        return asyncio.get_running_loop().create_task(run_load_async(spec, self.run_dir, progress=False))

    async def _end(self) -> None:
        self._task.cancel()  # nothing when it has ended
        await asyncio.wait({self._task})

    def __enter__(self) -> BackgroundLoad:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._end(), self._loop).result(timeout=60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def _raise_if_failed(self) -> None:
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            raise AssertionError("the load run failed") from self._task.exception()

    def rows(self) -> list[dict[str, Any]]:
        self._raise_if_failed()
        return list(self.run_dir.read_jsonl(RunFile.REQUESTS))

    def wait_rows(self, count: int, what: str, match: Callable[[dict[str, Any]], bool]) -> None:
        wait_for(lambda: sum(1 for row in self.rows() if match(row)) >= count, 30, what)

    def stop(self) -> pd.DataFrame:
        """End the run now; every request that completed (those the stop cut short are left out, and kept
        in `cut_short`)."""
        asyncio.run_coroutine_threadsafe(self._end(), self._loop).result(timeout=60)
        self._raise_if_failed()
        frame = load_requests_frame(self.run_dir)
        cancelled = frame["error_kind"] == "cancelled"
        # The wrapper may have answered some of these in full, and counted them, before the stop cut the
        # client's read short.
        self.cut_short = frame[cancelled].reset_index(drop=True)
        return frame[~cancelled].reset_index(drop=True)


def ok_row(row: dict[str, Any]) -> bool:
    return bool(row["ok"])


def sent_between(frame: pd.DataFrame, start: float, end: float) -> pd.DataFrame:
    """The rows whose intended send time lies in (start, end), unix seconds."""
    return frame[(frame["intended_send"] > start) & (frame["intended_send"] < end)]


def stop_after_recovery(load: BackgroundLoad, recovered: float, count: int = 5) -> pd.DataFrame:
    """Let `count` requests sent after `recovered` (unix time) complete, then end the load; its rows."""
    load.wait_rows(
        count, f"{count} requests sent after the recovery", lambda r: r["intended_send"] > recovered
    )
    return load.stop()


def assert_recovered(lab: Lab, frame: pd.DataFrame, recovered: float, since: float, count: int = 5) -> None:
    """After the fault: the requests sent once the lab was healthy again all succeeded, every service is
    ready, and Prometheus shows no fault active in a scrape after `since` (the fault's end)."""
    after = frame[frame["intended_send"] > recovered]
    assert len(after) >= count, f"only {len(after)} requests were sent after the recovery"
    assert after["ok"].all(), after[~after["ok"]][["intended_send", "status", "error"]]
    assert all(s.state == "ready" for s in lab.backend.status())
    lab.prometheus.assert_no_fault_active(since)


def restarted_under_load(
    lab: Lab, tmp_path: Path, kind: str, target: str
) -> tuple[ActiveFault, float, pd.DataFrame, pd.DataFrame]:
    """Load at 10 req/s; `kind` (kill or restart) applied to `target` once 5 requests succeeded; waits for
    the supervisor's restart and a healthy lab, then 5 more requests. (the fault, recovered at, the rows,
    the rows of the requests the end of the load cut short)"""
    with BackgroundLoad(lab.load_spec(rate=10, duration_s=60), tmp_path) as load:
        load.wait_rows(5, "requests answered before the fault", ok_row)
        with FaultInjector(lab.root) as injector:
            active = injector.apply(Fault(kind=kind, target=target, duration_s=5))
            restarts_before = active.detail["before"]["restarts"]
            wait_for(
                lambda: service(lab.backend, target).restarts == restarts_before + 1,
                20,
                f"the supervisor restarting the {target}",
            )
            recovered = wait_until_healthy(lab.backend)
            assert injector.revert(active)[0] == "ended"
        frame = stop_after_recovery(load, recovered)
        return active, recovered, frame, load.cut_short


# The wrapper's TTFT observations above 0.5 s (a bucket bound of its histogram).
SLOW_TTFT = (
    'sum(llm_time_to_first_token_seconds_count) - sum(llm_time_to_first_token_seconds_bucket{le="0.5"})'
)


# ---- the sim-engine faults -----------------------------------------------------------------------------
class TestSimEngineFaults:
    """One sim-engine lab for these tests, stopped before the real model's lab starts."""

    def test_kill_the_model_users_get_502_until_the_supervisor_has_restarted_it(
        self, sim: Lab, tmp_path: Path
    ) -> None:
        """Samples: requests fail with 502 while the model is down, and only then. Prometheus: one restart of
        the model, a new start time, and as many backend errors and 502s counted as the client saw."""
        restarts = 'lab_service_restarts_total{service="model"}'
        start_time = 'lab_service_start_time_seconds{service="model"}'
        backend_errors = "llm_backend_errors_total"
        answered_502 = 'llm_requests_total{endpoint="/generate",status_code="502"}'
        before = sim.counters(restarts, start_time, backend_errors, answered_502)

        active, recovered, frame, _ = restarted_under_load(sim, tmp_path, "kill", "model")

        failed = frame[~frame["ok"]]
        assert len(failed) >= 1, "no request failed while the model was down"
        assert (failed["status"] == 502).all() and (failed["error_kind"] == "http_5xx").all(), failed
        # The one in flight when it died at the earliest; none once the supervisor had it ready again.
        assert failed["intended_send"].min() > active.applied_wall - 1
        assert failed["intended_send"].max() < recovered

        after = sim.counters(restarts, start_time, backend_errors, answered_502, since=time.time())
        assert after[restarts] - before[restarts] == 1
        assert after[start_time] > before[start_time]
        assert after[backend_errors] - before[backend_errors] == len(failed)
        assert after[answered_502] - before[answered_502] == len(failed)
        assert_recovered(sim, frame, recovered, active.applied_wall)

    def test_restart_the_wrapper_users_cannot_connect_until_the_new_one_is_up(
        self, sim: Lab, tmp_path: Path
    ) -> None:
        """Samples: requests find nobody listening (status 0, connect) while the wrapper restarts.
        Prometheus: one restart of the wrapper, a new start time, and the new wrapper's request counter
        starting from zero: it counts exactly the requests that succeeded after the outage began."""
        restarts = 'lab_service_restarts_total{service="wrapper"}'
        start_time = 'lab_service_start_time_seconds{service="wrapper"}'
        before = sim.counters(restarts, start_time)

        active, recovered, frame, cut_short = restarted_under_load(sim, tmp_path, "restart", "wrapper")

        failed = frame[~frame["ok"]]
        assert len(failed) >= 1, "no request failed while the wrapper restarted"
        # Nothing answered them: no HTTP status, and no wrapper counted them.
        assert (failed["status"] == 0).all(), failed
        assert set(failed["error_kind"]) <= {"connect", "reset"}, failed
        assert failed["intended_send"].min() > active.applied_wall - 1
        assert failed["intended_send"].max() < recovered

        since = time.time()
        after = sim.counters(restarts, start_time, since=since)
        assert after[restarts] - before[restarts] == 1
        assert after[start_time] > before[start_time]
        outage = failed["intended_send"].min()
        served_by_new = frame[frame["ok"] & (frame["intended_send"] > outage)]
        counted = sim.prometheus.fresh('llm_requests_total{endpoint="/generate",status_code="200"}', since)
        # The load ends by cancelling what is in flight (BackgroundLoad.stop). The wrapper counts a 200 when
        # its answer is complete, before the answer has gone out; a request it had answered that way when the
        # cancel cut the client's read short is counted by the wrapper but is no success in `frame`. So it
        # counts every success after the outage began, plus at most those cut short (the old wrapper's
        # count, 5 or more successes before the fault, would break the upper bound).
        cut_after = cut_short[cut_short["intended_send"] > outage]
        assert len(served_by_new) <= counted <= len(served_by_new) + len(cut_after), (counted, cut_after)
        assert_recovered(sim, frame, recovered, active.applied_wall)

    def test_pause_the_model_holds_every_request_until_it_resumes(self, sim: Lab, tmp_path: Path) -> None:
        """Samples: every request sent while the model is stopped (SIGSTOP) succeeds, but only after it
        resumes. Prometheus: the supervisor's llm_faults_active{kind="pause"} is 1, the model is neither up
        for the supervisor nor scrapeable, and the wrapper's slow-TTFT count matches the client's rows."""
        before = sim.counters(SLOW_TTFT)

        with BackgroundLoad(sim.load_spec(rate=10, duration_s=60, stream=True), tmp_path) as load:
            load.wait_rows(5, "requests answered before the fault", ok_row)
            with FaultInjector(sim.root) as injector:
                active = injector.apply(Fault(kind="pause", target="model", duration_s=30))
                paused = time.time()
                prom = sim.prometheus
                wait_for(
                    lambda: (
                        prom.value('llm_faults_active{kind="pause"}') == 1
                        and prom.value('lab_service_up{service="model"}') == 0
                        and prom.value('up{job="model"}') == 0
                    ),
                    20,
                    "Prometheus seeing the model paused",
                )
                resumed = time.time()
                assert injector.revert(active)[0] == "reverted"
                recovered = wait_until_healthy(sim.backend)
            frame = stop_after_recovery(load, recovered)

        assert frame["ok"].all(), frame[~frame["ok"]]
        held = sent_between(frame, paused + 0.05, resumed)
        assert len(held) >= 5
        finished = held["intended_send"] + held["e2e_s"]
        assert (finished > resumed - 0.02).all(), "a request finished while the model was stopped"

        after = sim.counters(SLOW_TTFT, since=time.time())
        assert after[SLOW_TTFT] - before[SLOW_TTFT] == (frame["server_ttft_s"] > 0.5).sum() >= 1
        assert_recovered(sim, frame, recovered, resumed)

    def test_latency_delays_the_first_token_of_every_request_while_it_lasts(
        self, sim: Lab, tmp_path: Path
    ) -> None:
        """Samples: every request sent while the fault is on gets its first token at least delay_s late;
        before and after, answers are fast. Prometheus: llm_faults_active{kind="latency"} is 1, the delayed
        requests are counted in llm_faults_injected_total and above 0.5 s in the TTFT histogram."""
        delay_s = 0.5
        injected = 'llm_faults_injected_total{kind="latency"}'
        before = sim.counters(injected, SLOW_TTFT)

        with BackgroundLoad(sim.load_spec(rate=10, duration_s=60, stream=True), tmp_path) as load:
            load.wait_rows(5, "requests answered before the fault", ok_row)
            with FaultInjector(sim.root) as injector:
                active = injector.apply(Fault(kind="latency", duration_s=30, params={"delay_s": delay_s}))
                applied = time.time()
                wait_for(lambda: sim.prometheus.value('llm_faults_active{kind="latency"}') == 1, 15, "active")
                load.wait_rows(5, "delayed requests", lambda r: (r["server_ttft_s"] or 0) >= delay_s)
                assert injector.revert(active)[0] == "reverted"
                ended = (
                    time.time()
                )  # after the revert: a request sent while it was on its way still met the fault
                recovered = wait_until_healthy(sim.backend)
            # Enough requests after both instants: assert_recovered counts those after `recovered`, which a
            # slow revert or status call can put later than ended + 0.2.
            frame = stop_after_recovery(load, max(ended + 0.2, recovered))

        assert frame["ok"].all(), frame[~frame["ok"]]
        during = sent_between(frame, applied + 0.05, ended - 0.2)
        assert len(during) >= 5
        assert (during["ttft_s"] >= delay_s).all(), during[["intended_send", "ttft_s"]]
        before_fault = frame[frame["intended_send"] < active.applied_wall]
        after_fault = frame[frame["intended_send"] > ended + 0.2]
        assert before_fault["ttft_s"].median() < delay_s / 2
        assert after_fault["ttft_s"].median() < delay_s / 2

        after = sim.counters(injected, SLOW_TTFT, since=time.time())
        delayed = after[injected] - before[injected]
        # Every request sent while it was on was delayed; every delayed one took delay_s or more to its
        # first token.
        assert len(during) <= delayed <= (frame["server_ttft_s"] >= delay_s).sum()
        assert after[SLOW_TTFT] - before[SLOW_TTFT] == (frame["server_ttft_s"] > 0.5).sum()
        assert_recovered(sim, frame, recovered, ended)

    def test_error_answers_every_request_with_the_status_it_was_given(self, sim: Lab, tmp_path: Path) -> None:
        """Samples: with probability 1, every request sent while it lasts gets 503 (and only those fail).
        Prometheus: llm_faults_active{kind="error"} is 1; llm_faults_injected_total{kind="error"} and the
        wrapper's 503 count both grow by exactly the 503s the client saw."""
        injected = 'llm_faults_injected_total{kind="error"}'
        answered_503 = 'llm_requests_total{endpoint="/generate",status_code="503"}'
        before = sim.counters(injected, answered_503)

        with BackgroundLoad(sim.load_spec(rate=10, duration_s=60), tmp_path) as load:
            load.wait_rows(5, "requests answered before the fault", ok_row)
            with FaultInjector(sim.root) as injector:
                fault = Fault(kind="error", duration_s=30, params={"probability": 1.0, "status": 503})
                active = injector.apply(fault)
                applied = time.time()
                wait_for(lambda: sim.prometheus.value('llm_faults_active{kind="error"}') == 1, 15, "active")
                load.wait_rows(10, "requests answered 503", lambda r: r["status"] == 503)
                assert injector.revert(active)[0] == "reverted"
                ended = (
                    time.time()
                )  # after the revert: a request sent while it was on its way still met the fault
                recovered = wait_until_healthy(sim.backend)
            # Enough requests after both instants: assert_recovered counts those after `recovered`, which a
            # slow revert or status call can put later than ended + 0.2.
            frame = stop_after_recovery(load, max(ended + 0.2, recovered))

        during = sent_between(frame, applied + 0.05, ended - 0.2)
        assert len(during) >= 5
        assert (during["status"] == 503).all() and (during["error_kind"] == "http_5xx").all(), during
        failed = frame[~frame["ok"]]
        assert (failed["status"] == 503).all(), failed
        assert (
            failed["intended_send"].min() > active.applied_wall - 1 and failed["intended_send"].max() < ended
        )

        after = sim.counters(injected, answered_503, since=time.time())
        assert after[injected] - before[injected] == len(failed)
        assert after[answered_503] - before[answered_503] == len(failed)
        assert_recovered(sim, frame, recovered, ended)

    def test_stream_cut_ends_every_stream_after_the_given_tokens(self, sim: Lab, tmp_path: Path) -> None:
        """Samples: streams sent while it lasts end after `after_tokens` chunks without their final line
        (status 200, stream_cut). Prometheus: llm_faults_active{kind="stream_cut"} is 1; the cuts are counted
        in llm_faults_injected_total and as the wrapper's 502s, exactly as many as the client saw."""
        after_tokens, max_tokens = 2, 8
        injected = 'llm_faults_injected_total{kind="stream_cut"}'
        answered_502 = 'llm_requests_total{endpoint="/generate",status_code="502"}'
        before = sim.counters(injected, answered_502)

        spec = sim.load_spec(rate=10, duration_s=60, stream=True, max_tokens=max_tokens)
        with BackgroundLoad(spec, tmp_path) as load:
            load.wait_rows(5, "requests answered before the fault", ok_row)
            with FaultInjector(sim.root) as injector:
                fault = Fault(kind="stream_cut", duration_s=30, params={"after_tokens": after_tokens})
                active = injector.apply(fault)
                applied = time.time()
                wait_for(
                    lambda: sim.prometheus.value('llm_faults_active{kind="stream_cut"}') == 1, 15, "active"
                )
                load.wait_rows(10, "cut streams", lambda r: r["error_kind"] == "stream_cut")
                assert injector.revert(active)[0] == "reverted"
                ended = (
                    time.time()
                )  # after the revert: a request sent while it was on its way still met the fault
                recovered = wait_until_healthy(sim.backend)
            # Enough requests after both instants: assert_recovered counts those after `recovered`, which a
            # slow revert or status call can put later than ended + 0.2.
            frame = stop_after_recovery(load, max(ended + 0.2, recovered))

        during = sent_between(frame, applied + 0.05, ended - 0.2)
        assert len(during) >= 5
        assert (during["error_kind"] == "stream_cut").all(), during
        assert (during["status"] == 200).all() and (during["chunks"] == after_tokens).all(), during
        cut = frame[~frame["ok"]]
        assert (cut["error_kind"] == "stream_cut").all(), cut
        # A stream already past after_tokens when the fault began is cut at its next chunk, and that can be
        # its final done line: the wrapper checks the fault before it reads each next chunk from the model,
        # so a fault injected while it waited for the last token cuts the line after it. That stream got all
        # max_tokens tokens but no done line (no done_reason, no usage): a cut like any other, counted as a
        # 502 and an injection by the wrapper. So max_tokens chunks is a cut too, not max_tokens - 1 at most.
        assert cut["chunks"].between(after_tokens, max_tokens).all(), cut

        after = sim.counters(injected, answered_502, since=time.time())
        assert after[injected] - before[injected] == len(cut)
        assert after[answered_502] - before[answered_502] == len(cut)
        assert_recovered(sim, frame, recovered, ended)


# ---- the real-model faults -----------------------------------------------------------------------------
def warm_model(lab: Lab) -> None:
    """One request, so that the model is in memory, and Prometheus has seen it loaded."""
    answer = httpx.post(f"{lab.wrapper_url}/generate", json={"prompt": "hi", "max_tokens": 2}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert lab.prometheus.fresh("model_loaded_models", time.time()) == 1


def token_gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """The gaps between consecutive token chunks reaching a closed-loop client, across requests too (so a
    stall before a first token is a gap as well): `end`, the unix time of the later chunk, and `gap_s`."""
    arrivals: list[float] = []
    for row in frame[frame["ok"]].to_dict("records"):
        at = float(row["intended_send"]) + float(row["ttft_s"])
        arrivals.append(at)
        for gap in row["itl_s"]:
            at += float(gap)
            arrivals.append(at)
    ends = pd.Series(sorted(arrivals))
    return pd.DataFrame({"end": ends, "gap_s": ends.diff()}).dropna()


@pytest.mark.llama
class TestRealModelFaults:
    """One lab with the real model (SmolLM2 on llama.cpp), started after the sim-engine lab has stopped:
    llama.cpp's threads slow down sharply when any other process wants a CPU."""

    def test_cpu_stress_slows_the_model_s_token_stream(self, llama: Lab, tmp_path: Path) -> None:
        """Samples: the median gap between two tokens is over twice as long while stress-ng loads every CPU
        as before or after it, and every request still succeeds. Prometheus: the supervisor's
        llm_faults_active{kind="cpu_stress"} is 1 while it runs, and the wrapper streams under half as many
        tokens per second as before or after it.

        The normal speed is the faster of the windows before and after the stress: a 2-core machine shared
        with other work is seldom quiet for both, while stress-ng on every CPU slows the whole window."""
        if shutil.which("stress-ng") is None:
            pytest.skip("stress-ng is not installed (apt-get install stress-ng)")
        warm_model(llama)
        stress_s, window_s = 4, 3.0
        spec = llama.load_spec(
            mode="closed",
            concurrency=1,
            duration_s=60,
            stream=True,
            max_tokens=16,
            options={"temperature": 0},
            timeout_s=30.0,
        )
        prom = llama.prometheus
        with BackgroundLoad(spec, tmp_path) as load:
            load.wait_rows(
                1,
                f"{window_s + 0.5:g} s of requests before the fault",
                lambda r: r["intended_send"] < time.time() - window_s - 0.5,
            )
            with FaultInjector(llama.root) as injector:
                active = injector.apply(Fault(kind="cpu_stress", duration_s=stress_s))
                applied = active.applied_wall
                wait_for(lambda: prom.value('llm_faults_active{kind="cpu_stress"}') == 1, 15, "stress seen")
                # Ended by stress-ng's own --timeout, not by us.
                wait_for(lambda: prom.value('llm_faults_active{kind="cpu_stress"}') == 0, 20, "stress ended")
                ended = time.time()
                assert injector.revert(active)[0] == "expired"
                recovered = wait_until_healthy(llama.backend)
            # Tokens through the whole window after the stress, and a few requests after the recovery.
            load.wait_rows(1, "a request after the stress", lambda r: r["intended_send"] > ended + window_s)
            frame = stop_after_recovery(load, recovered, count=3)
        assert frame["ok"].all(), frame[~frame["ok"]]

        gaps = token_gaps(frame)

        def median_gap(start: float) -> float:
            # The gaps that overlap the window: a stall longer than the window counts too.
            overlap = (gaps["end"] > start) & (gaps["end"] - gaps["gap_s"] < start + window_s)
            return float(gaps[overlap]["gap_s"].median())

        before, during, after = median_gap(applied - window_s), median_gap(applied + 0.5), median_gap(ended)
        assert during > 2 * min(before, after), (
            f"median token gap {during:.3f} s under stress, {before:.3f} s before, {after:.3f} s after"
        )

        # Token chunks the wrapper streamed per second (first tokens and the ones after).
        streamed = (
            f"sum(rate(llm_time_to_first_token_seconds_count[{window_s:g}s])) + "
            f"sum(rate(llm_inter_token_latency_seconds_count[{window_s:g}s]))"
        )
        rate_before, rate_during, rate_after = (
            prom.value(streamed, at=t) for t in (applied, applied + 0.5 + window_s, ended + window_s)
        )
        assert rate_before is not None and rate_during is not None and rate_after is not None
        assert rate_during < max(rate_before, rate_after) / 2, (rate_before, rate_during, rate_after)
        assert_recovered(llama, frame, recovered, ended, count=3)

    def test_unload_drops_the_model_and_the_next_request_pays_a_cold_load(
        self, llama: Lab, tmp_path: Path
    ) -> None:
        """Samples: the first request after the unload waits for the model to load (its TTFT includes the
        load the model server measured, and is above the others'). Prometheus: model_loaded_models goes to 0,
        one unload (keep_alive_zero) and then exactly one new load are counted, and the model is loaded again.

        The requests are sent after the unload, not during it: an unload asked for while a request runs
        waits for it to end, and the next request reloads the model at once, before a scrape could see it
        unloaded."""
        warm_model(llama)
        loads = "model_load_duration_seconds_count"
        load_seconds = "model_load_duration_seconds_sum"
        unloads = 'model_unloads_total{reason="keep_alive_zero"}'
        before = llama.counters(loads, load_seconds, unloads, since=time.time())

        with FaultInjector(llama.root) as injector:
            active = injector.apply(Fault(kind="unload", duration_s=5))
            assert active.detail["done_reason"] == "unload"
            unloaded = time.time()
            assert llama.prometheus.fresh("model_loaded_models", unloaded) == 0
            assert llama.counters(unloads, since=unloaded)[unloads] - before[unloads] == 1
            assert service(llama.backend, "model").state == "ready"  # unloaded is not down

            # Four requests one after the other: the first loads the model, the others find it loaded.
            spec = llama.load_spec(
                mode="closed", concurrency=1, duration_s=60, max_requests=4, stream=True, timeout_s=30.0
            )
            frame = run_load(spec, tmp_path, progress=False).frame
            assert injector.revert(active)[0] == "ended"

        assert frame["ok"].all() and len(frame) == 4, frame
        after = llama.counters(loads, load_seconds, since=time.time())
        assert after[loads] - before[loads] == 1
        load_s = after[load_seconds] - before[load_seconds]
        first, rest = frame.iloc[0], frame.iloc[1:]
        assert first["ttft_s"] >= load_s > 0, (first["ttft_s"], load_s)
        assert first["ttft_s"] > rest["ttft_s"].median(), frame["ttft_s"].tolist()
        assert llama.prometheus.fresh("model_loaded_models", time.time()) == 1
        assert_recovered(llama, frame, unloaded, unloaded, count=4)
