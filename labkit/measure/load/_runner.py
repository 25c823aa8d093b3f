"""Drives a load run: the open loop's schedule or the closed loop's workers, on one event loop and one
shared HTTP client, recording every request exactly once as it completes, however the run ends.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
from tqdm import tqdm

from labkit.errors import ConfigError
from labkit.measure.load._api import discover_model
from labkit.measure.load._records import ERROR_KINDS, REQUEST_COLUMNS, Attempt, ClockAnchor, requests_frame
from labkit.measure.load._result import LoadMonitor, LoadProgress, LoadResult, achieved_rate
from labkit.measure.load._sender import RequestSender
from labkit.measure.load._shapes import read_trace_file
from labkit.measure.load._spec import LoadSpec, schedule, workload
from labkit.measure.load._workload import Workload, file_digest
from labkit.measure.load_apis import is_openai
from labkit.rundir import EventKind, RunDirectory, RunFile
from labkit.secret_files import read_token_file

__all__ = ["run_load", "run_load_async"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# After a run's last request should have ended by its own deadline, this long more before it is cancelled.
_DRAIN_GRACE_S = 1.0
# Open loop: idle connections kept for reuse. httpcore 1.0 pays O(idle x all connections) on every request
# start and end: measured here, 222 idle connections left by a burst cost 13 ms of CPU per request until
# they expire, 32 cost 1.3 ms more, 4 none. Fewer would make every request past that many in flight open a
# new connection (more work for the server under test); 32 is the wrapper's default in-flight bound.
# A closed loop keeps one connection per worker: its connections are idle only between two requests.
_OPEN_LOOP_KEEPALIVE = 32
# How often a monitor (`run_load(..., monitor=...)`) is shown the run's progress.
MONITOR_INTERVAL_S = 0.25
# Request ids are UUIDs (llama-cpp-python's server answers 400 to an X-Request-ID that is not one): the run's
# random 80 bits, then the row number in the last 12 hex digits. No two runs' ids meet in a lab's logs.
_ID_PREFIX_BYTES = 10


def request_uuid(prefix: str, row: int) -> str:
    """The UUID-shaped request id of row `row` of the run whose prefix (8-4-4-4 hex digits) is `prefix`."""
    return f"{prefix}-{row:012x}"


def _schedule_summary(spec: LoadSpec, offsets: list[float] | None) -> dict[str, Any]:
    """What was scheduled: the shape and its settings, how many requests, over what span, at what mean
    rate, and how irregular the gaps are (their coefficient of variation: 0 constant, 1 Poisson)."""
    if offsets is None:
        return {"scheduled": None}
    span = offsets[-1] - offsets[0] if len(offsets) > 1 else 0.0
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    mean_gap = statistics.fmean(gaps) if len(gaps) > 1 else 0.0
    summary: dict[str, Any] = {
        "arrival": spec.arrival,
        "scheduled": len(offsets),
        "first_offset_s": offsets[0] if offsets else None,
        "last_offset_s": offsets[-1] if offsets else None,
        "schedule_rate": (len(offsets) - 1) / span if span > 0 else None,
        "gap_cv": statistics.pstdev(gaps) / mean_gap if mean_gap > 0 else None,
    }
    if spec.arrival == "ramp":
        summary |= {"rate": spec.rate, "rate_end": spec.rate_end, "ramp": spec.ramp}
        half = spec.duration_s / 2
        summary["first_half"] = sum(1 for t in offsets if t < half)
        summary["second_half"] = len(offsets) - summary["first_half"]
    elif spec.arrival == "gamma":
        summary |= {"rate": spec.rate, "burstiness": spec.burstiness}
    elif spec.arrival == "trace" and spec.trace_file is not None:
        summary["trace_file"] = {"path": str(spec.trace_file), "sha256": file_digest(spec.trace_file)}
        summary["trace_lines"] = len(read_trace_file(spec.trace_file))
    return summary


def _workload_record(spec: LoadSpec, model: str | None) -> dict[str, Any]:
    """What the requests asked for, in a few fields: the API, the model sent (discovered or given), where
    the prompts came from and the token distributions (`MEAN[:STDDEV]`, or a fixed count)."""
    max_tokens = spec.max_tokens
    record: dict[str, Any] = {
        "api": spec.api,
        "model": model,
        "target": spec.target,
        "stream": spec.stream,
        "prompts": spec.workload_source,
        "prompt_tokens": None if spec.prompt_tokens is None else str(spec.prompt_tokens),
        "max_tokens": max_tokens if max_tokens is None or isinstance(max_tokens, int) else str(max_tokens),
    }
    if spec.prompts_file is not None:
        record["prompts_file"] = {"path": str(spec.prompts_file), "sha256": file_digest(spec.prompts_file)}
    return record


def _write_params(
    run_dir: RunDirectory,
    spec: LoadSpec,
    offsets: list[float] | None,
    anchor: ClockAnchor,
    model: str | None,
    id_prefix: str,
) -> None:
    """params.json's "load" key; other keys (a notebook's parameters, chaos) are kept. A run directory with a
    run.json (a run of its own, not a steady-state check inside one) gets the workload there too."""
    existing: Any = {}
    if run_dir.file(RunFile.PARAMS).exists():
        existing = run_dir.read_json(RunFile.PARAMS)
    params = dict(existing) if isinstance(existing, dict) else {}
    work = _workload_record(spec, model)
    params["load"] = {
        "spec": spec.model_dump(mode="json"),
        "workload": work,
        "schedule": _schedule_summary(spec, offsets),
        "clock_anchor": {"wall": anchor.wall, "monotonic": anchor.monotonic},
        "columns": list(REQUEST_COLUMNS),
        "request_id_prefix": id_prefix,
        "error_kinds": ERROR_KINDS,
        "requests_file": RunFile.REQUESTS,
    }
    run_dir.write_json(RunFile.PARAMS, params)
    if run_dir.file(RunFile.RUN).exists():
        run_dir.write_run_record({"load": work})


@dataclass(eq=False, repr=False)
class _LoadRun:
    """One run's state: the attempts not yet recorded, the tasks in flight, the row sink."""

    spec: LoadSpec
    sender: RequestSender
    work: Workload
    write: Callable[[Mapping[str, Any]], None]
    bar: tqdm[Any]
    anchor: ClockAnchor
    id_prefix: str
    rows: list[dict[str, Any]] = field(init=False, default_factory=list)
    pending: dict[int, Attempt] = field(init=False, default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    started: float | None = field(init=False, default=None)
    scheduled: int = field(init=False, default=0)  # attempts whose intended send time has come
    stopped: str | None = field(init=False, default=None)  # a monitor's reason to stop early

    def x_id(self, request_id: int) -> str:
        """The X-Request-ID of request `request_id`: a UUID, the run's prefix and then the row number in
        hex, unique across runs (the prefix finds the run)."""
        return request_uuid(self.id_prefix, request_id)

    def record(self, attempt: Attempt) -> None:
        """Write the attempt's row; exactly once, whichever path gets here first."""
        if attempt.recorded:
            return
        attempt.recorded = True
        self.pending.pop(attempt.request_id, None)
        row = attempt.row(self.anchor)
        self.rows.append(row)
        self.write(row)
        self.bar.update()

    async def request(self, attempt: Attempt, body: bytes) -> None:
        try:
            await self.sender.send(attempt, body, attempt.intended + self.spec.timeout_s)
        except asyncio.CancelledError:
            why = f"stopped early: {self.stopped}" if self.stopped else "the run ended before it finished"
            attempt.fail("cancelled", why)
            raise
        except Exception as exc:  # a bug here must cost one row, not the run
            logger.exception("load generator failed on request %d", attempt.request_id)
            attempt.fail("client", f"{type(exc).__name__}: {exc}")
        finally:
            self.record(attempt)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def open_loop(self, offsets: list[float]) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time
        t0 = self.started = clock()
        pending = self.pending
        work = self.work
        for request_id, offset in enumerate(offsets):
            intended = t0 + offset
            delay = intended - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            prompt_index, body = work.next()
            attempt = pending[request_id] = Attempt(request_id, intended, prompt_index, self.x_id(request_id))
            self.scheduled += 1
            self._spawn(self.request(attempt, body))
        last = t0 + offsets[-1] if offsets else t0
        await self.drain(last + self.spec.timeout_s + _DRAIN_GRACE_S)

    async def closed_loop(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time
        t0 = self.started = clock()
        end = t0 + self.spec.duration_s
        ids = itertools.count()
        cap, work = self.spec.max_requests, self.work

        async def worker() -> None:
            while clock() < end:
                request_id = next(ids)
                if request_id >= cap:
                    return
                prompt_index, body = work.next()  # drawn in request order: the same spec, the same work
                now = clock()
                attempt = self.pending[request_id] = Attempt(
                    request_id, now, prompt_index, self.x_id(request_id)
                )
                attempt.actual = now  # a closed loop sends when it means to: no queueing delay
                self.scheduled += 1
                await self.request(attempt, body)

        for _ in range(self.spec.concurrency or 1):
            self._spawn(worker())
        await self.drain(end + self.spec.timeout_s + _DRAIN_GRACE_S)

    async def watch(self, monitor: LoadMonitor, main: asyncio.Task[None]) -> None:
        """Show `monitor` the progress every MONITOR_INTERVAL_S; on its first reason, stop the run: `main`
        (the schedule or the workers, and their drain) is cancelled, and with it what is in flight."""
        loop = asyncio.get_running_loop()
        while not main.done():
            await asyncio.sleep(MONITOR_INTERVAL_S)
            if self.started is None:
                continue
            progress = LoadProgress(
                elapsed_s=loop.time() - self.started,
                started_at=self.anchor.to_wall(self.started),
                scheduled=self.scheduled,
                completed=len(self.rows),
                duration_s=self.spec.duration_s,
                rows=self.rows,
            )
            reason = monitor(progress)
            if reason:
                self.stopped = reason
                main.cancel()
                return

    async def drive(self, offsets: list[float] | None, monitor: LoadMonitor | None) -> None:
        """The schedule (or the workers) to its end, watched by `monitor` when one is given."""
        main = asyncio.get_running_loop().create_task(
            self.open_loop(offsets) if offsets is not None else self.closed_loop()
        )
        watcher = asyncio.get_running_loop().create_task(self.watch(monitor, main)) if monitor else None
        try:
            await main
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.stopped is None or (current is not None and current.cancelling()):
                raise  # cancelled from outside (Ctrl-C), not stopped by the monitor
            await self.cancel_all()
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)

    async def drain(self, deadline: float) -> None:
        """Wait for the tasks in flight until `deadline` (monotonic); cancel what is left."""
        if self.tasks:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait(set(self.tasks), timeout=timeout)
        await self.cancel_all()

    async def cancel_all(self) -> None:
        """Cancel every task; each records its request as cancelled. Then sweep attempts never started."""
        tasks = set(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.sweep()

    def sweep(self) -> None:
        """Record every attempt still unrecorded as cancelled (a task cancelled before its first step)."""
        for attempt in list(self.pending.values()):
            attempt.fail("cancelled", "the run ended before the request started")
            self.record(attempt)


def _new_run_dir(out: RunDirectory | Path | str) -> RunDirectory:
    if isinstance(out, RunDirectory):
        if out.file(RunFile.REQUESTS).exists():
            raise ConfigError(
                f"{out.file(RunFile.REQUESTS)} already exists: one load run per run directory; "
                "pass the parent folder to get a new run directory"
            )
        return out
    return RunDirectory.create(Path(out), "load")


async def run_load_async(
    spec: LoadSpec,
    out: RunDirectory | Path | str,
    *,
    progress: bool = True,
    monitor: LoadMonitor | None = None,
) -> LoadResult:
    """`run_load` for code that already runs an event loop (`await run_load_async(...)` in a notebook)."""
    # Validated again here, the edge: `model_copy(update=...)` and `model_construct` skip validation.
    spec = LoadSpec(**spec.model_dump())
    run_dir = _new_run_dir(out)
    offsets = schedule(spec) if spec.mode == "open" else None
    pool = spec.max_in_flight if spec.mode == "open" else (spec.concurrency or 1)
    keepalive = min(pool, _OPEN_LOOP_KEEPALIVE) if spec.mode == "open" else pool
    # trust_env=False: a proxy from the environment must never sit between the generator and its target.
    headers = {"Content-Type": "application/json"}
    if spec.api_key_file is not None:
        # Read now, kept only in the client's headers: params.json records the file's path.
        key = read_token_file(spec.api_key_file, what="API key", flag="api_key_file")
        headers["Authorization"] = f"Bearer {key}"
    model = spec.model
    if model is None and is_openai(spec.api):
        # A client of its own: the run's client opens once, for the run.
        async with httpx.AsyncClient(headers=headers, trust_env=False) as probe:
            model = await discover_model(probe, spec.url)
    work = workload(spec, model=model)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(spec.timeout_s),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=keepalive),
        headers=headers,
        trust_env=False,
    )
    anchor = ClockAnchor.now()
    # Each request's X-Request-ID is `<prefix>-<request_id>`: random per run, so ids never repeat in the
    # lab's logs across runs, and grepping the prefix finds one run's lines.
    hex_id = secrets.token_hex(_ID_PREFIX_BYTES)
    id_prefix = f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}"
    _write_params(run_dir, spec, offsets, anchor, model, id_prefix)
    slots = asyncio.Semaphore(pool) if spec.mode == "open" else None
    sender = RequestSender(client, spec.target, stream=spec.stream, openai=is_openai(spec.api), slots=slots)
    run_dir.journal(
        EventKind.LOAD_STARTED,
        mode=spec.mode,
        api=spec.api,
        model=model,
        target=spec.target,
        scheduled=len(offsets or ()),
        request_id_prefix=id_prefix,
    )
    bar = tqdm(
        total=len(offsets) if offsets is not None else None,
        desc=f"load {spec.mode}",
        unit="req",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    )
    # httpx loads anyio's asyncio backend on its first request; that import (~40 ms) would otherwise
    # stall the event loop inside the schedule and show as the first requests' queueing delay.
    await anyio.sleep(0)
    interrupted = False
    with bar, run_dir.jsonl_writer(RunFile.REQUESTS) as write:
        run = _LoadRun(spec, sender, work, write, bar, anchor, id_prefix)
        try:
            async with client:
                try:
                    await run.drive(offsets, monitor)
                except BaseException as exc:  # Ctrl-C (cancellation) or a bug: nothing may run on
                    interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
                    await run.cancel_all()
                    raise
        finally:
            run.sweep()
            finished = time.monotonic()
            run_dir.journal(
                EventKind.LOAD_FINISHED,
                requests=len(run.rows),
                ok=sum(1 for r in run.rows if r["ok"]),
                interrupted=interrupted,
                stopped=run.stopped,
            )
    frame = requests_frame(run.rows)
    started = run.started if run.started is not None else finished
    return LoadResult(
        spec=spec,
        run_dir=run_dir,
        frame=frame,
        scheduled=len(offsets) if offsets is not None else len(frame),
        achieved_rate=achieved_rate(frame),
        elapsed_s=finished - started,
        model=model,
        stopped=run.stopped,
    )


def run_load(
    spec: LoadSpec,
    out: RunDirectory | Path | str,
    *,
    progress: bool = True,
    monitor: LoadMonitor | None = None,
) -> LoadResult:
    """Send the load `spec` describes and return every request as a row; blocks until the run ends.

    `out` is a folder (a new run directory `<timestamp>-load` is made in it) or a `RunDirectory` (shared
    with the rest of a run; it must not hold a load run yet). `requests.jsonl` gets each row as its request
    completes; `params.json` gets the spec under "load" before the first request. Ctrl-C cancels what is
    in flight, records it as `cancelled`, and raises KeyboardInterrupt with the file complete.
    Works inside a running event loop too (Jupyter): the run then gets a thread and a loop of its own.

    `monitor`, when given, is called with the run's `LoadProgress` every MONITOR_INTERVAL_S; the first
    reason it returns stops the run early (`LoadResult.stopped`, and `load_finished`'s `stopped` in the
    journal): nothing more is sent, and what is in flight is cancelled and recorded as such.
    """
    coro = run_load_async(spec, out, progress=progress, monitor=monitor)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    return _run_in_own_thread(coro)


def _run_in_own_thread(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = loop.run_until_complete(task)
        except BaseException as exc:  # handed to the calling thread below
            outcome["error"] = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, name="labkit-load", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(task.cancel)
        thread.join()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]  # type: ignore[no-any-return]
