"""The lab's scenarios, as the notebooks run them: one call each, so that a notebook only narrates.

`SCENARIOS` is the catalog `labkit run` reads (name -> notebook, title, quick parameters for CI).
`open_lab` attaches to a running lab or brings one up (and takes down only a lab it started).
Each scenario writes one run directory (see labkit.rundir) and, while Prometheus is reachable, saves
the run's Prometheus series into it, so that the report renders from files after the lab is gone.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from labkit._version import __version__
from labkit.chaos import (
    FAULT_KINDS,
    FAULT_TARGETS,
    MAX_RUN_S,
    ExperimentResult,
    Fault,
    random_schedule,
    run_experiment,
)
from labkit.config import LabConfig, embedded_model_path, load_config, resolve_lab_dir
from labkit.errors import ConfigError, LabkitError
from labkit.lab.backend import Backend
from labkit.lab.gpu import GpuReader
from labkit.lab.registry import attach_backend, backend_for
from labkit.measure.load import LoadResult, LoadSpec, run_load
from labkit.measure.prom import PrometheusError
from labkit.measure.slo import SloReport, evaluate_client_slos, load_slo_spec
from labkit.params import Bound, check_bounds
from labkit.rundir import RunDirectory

__all__ = [
    "PARAMETER_BOUNDS",
    "SCENARIOS",
    "LabSession",
    "Scenario",
    "ScenarioRun",
    "baseline",
    "check_setup",
    "kill_and_recover",
    "latency_and_remediation",
    "open_lab",
    "random_chaos",
    "resolve_out_dir",
    "warm_up",
]

logger = logging.getLogger(__name__)

# Prometheus scrapes every second: this long after a run's last request its series hold every request.
_FINAL_SCRAPE_WAIT_S = 2.5


# What each scenario's parameters may be, declared once: `labkit run` checks a run's values (and the
# catalog's quick ones) before anything starts, and each scenario function below checks its arguments
# before it makes a run directory, for a notebook that papermill runs on its own.
_LOAD_BOUNDS: dict[str, Bound] = {
    "duration_s": Bound(0, MAX_RUN_S, low_open=True, unit="s"),
    "rate": Bound(0, 1000, low_open=True, unit="requests/s"),
    "max_tokens": Bound(1, 4096),
}
_EXPERIMENT_BOUNDS: dict[str, Bound] = {
    **_LOAD_BOUNDS,
    "steady_state_s": Bound(0, 600, low_open=True, unit="s"),
}
PARAMETER_BOUNDS: dict[str, dict[str, Bound]] = {
    "check_setup": {k: _LOAD_BOUNDS[k] for k in ("duration_s", "rate")},
    "baseline": _LOAD_BOUNDS,
    "kill_and_recover": {
        **_EXPERIMENT_BOUNDS,
        "kill_at_s": Bound(0, below="duration_s", unit="s"),
        "target": Bound(choices=FAULT_TARGETS["kill"]),
    },
    "latency_and_remediation": {
        **_EXPERIMENT_BOUNDS,
        # the fault lasts to 1 s before the end of the method: it must start before that
        "latency_at_s": Bound(0, below="duration_s", margin=1, unit="s"),
        "delay_s": Bound(0, 60, low_open=True, unit="s"),
        "threshold_s": Bound(0, 600, low_open=True, unit="s"),
        "breaches_to_act": Bound(1, 100),
    },
    "random_chaos": {**_EXPERIMENT_BOUNDS, "kinds": Bound(choices=FAULT_KINDS, many=True)},
}


@dataclass(frozen=True)
class Scenario:
    """One runnable scenario: the notebook that narrates it and the small parameters CI runs it with."""

    name: str
    notebook: str  # file name in notebooks/
    title: str
    quick: dict[str, Any] = field(default_factory=dict)

    @property
    def bounds(self) -> Mapping[str, Bound]:
        """The allowed values of this scenario's parameters (PARAMETER_BOUNDS)."""
        return PARAMETER_BOUNDS.get(self.name, {})

    def check_parameters(self, values: Mapping[str, Any]) -> None:
        """ParameterRangeError (a ConfigError) naming the first of `values` outside its bound."""
        check_bounds(self.name, self.bounds, values)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("check_setup", "00_check_setup.ipynb", "Check the setup", {}),
        Scenario(
            "baseline", "01_baseline.ipynb", "Baseline: the SLOs with nothing broken", {"duration_s": 10}
        ),
        Scenario(
            "kill_and_recover",
            "02_kill_and_recover.ipynb",
            "Kill the model server and watch it recover",
            {"duration_s": 20, "kill_at_s": 6, "steady_state_s": 3},
        ),
        Scenario(
            "latency_and_remediation",
            "03_latency_and_remediation.ipynb",
            "Injected latency, healed by automated remediation",
            {"duration_s": 24, "steady_state_s": 3},
        ),
        Scenario(
            "random_chaos",
            "04_random_chaos.ipynb",
            "A seeded random chaos schedule",
            {"duration_s": 30, "steady_state_s": 3},
        ),
    )
}


def resolve_out_dir(out_dir: str | Path | None = None) -> Path:
    """Where run directories go: `out_dir` when given, else $LABKIT_OUT_DIR (`make lab` sets it to the
    project's reports/runs, since a notebook's kernel starts in the notebook's own folder), else
    reports/runs under the current directory."""
    if out_dir:
        return Path(out_dir)
    return Path(os.environ.get("LABKIT_OUT_DIR") or "reports/runs")


# ---- the lab -----------------------------------------------------------------------------------


@dataclass
class LabSession:
    """A lab a notebook uses. `close()` takes it down only if this session brought it up."""

    backend: Backend
    config: LabConfig
    started_here: bool

    @property
    def lab_dir(self) -> Path:
        return self.backend.lab.root

    @property
    def wrapper_url(self) -> str:
        return self.config.wrapper_url

    @property
    def prometheus_url(self) -> str:
        return self.config.prometheus_url

    def status(self) -> pd.DataFrame:
        """One row per service: state, pid, restarts, url (and the container on the Docker backend)."""
        rows = []
        for s in self.backend.status():
            row: dict[str, Any] = {
                "service": s.name, "state": s.state, "pid": s.pid, "restarts": s.restarts, "url": s.url
            }  # fmt: skip
            if s.container is not None:
                row["container"] = s.container
            rows.append(row)
        return pd.DataFrame(rows)

    def close(self) -> None:
        if self.started_here and self.backend.is_running():
            self.backend.down()
        self.started_here = False

    def __enter__(self) -> LabSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lab(
    lab_dir: str | Path | None = "",
    *,
    engine: str = "llama",
    backend: str = "local",
    say: Callable[[str], None] | None = print,
    **settings: Any,
) -> LabSession:
    """The lab running in `lab_dir` ("" or None: the default lab directory), or a new one started there
    with `engine`, `backend` ("local" processes or "docker" containers) and `settings` (any `labkit up`
    setting, e.g. wrapper_port=8001).

    A lab this call starts is taken down by `close()` and, as a backstop, when the Python process (the
    notebook's kernel) exits. A lab that was already running is used as it is and left running.
    Either way it returns once Prometheus has scraped every service, so that a run's series are whole."""
    if backend not in ("local", "docker"):
        raise ConfigError(f"backend must be 'local' or 'docker', not {backend!r}")
    say = say or (lambda _line: None)
    root = resolve_lab_dir(Path(lab_dir) if lab_dir else None)
    attached = attach_backend(root)
    if attached.is_running():
        config = attached.saved_config()
        say(f"using the lab already running in {root} (engine {config.engine}, backend {attached.name})")
        attached.wait_scraped(say=say)  # e.g. `labkit up`, then a run at once
        return LabSession(attached, config, started_here=False)
    config = load_config(lab_dir=root, engine=engine, backend=backend, **settings)
    lab = backend_for(config)
    say(f"starting a lab in {root} (engine {engine}, backend {backend})...")
    started = time.monotonic()
    lab.up(wait_scraped=False)  # on failure nothing is left running
    session = LabSession(lab, config, started_here=True)
    atexit.register(session.close)  # the backstop, before anything else can fail
    session.config = lab.saved_config()
    say(f"lab ready in {time.monotonic() - started:.1f} s")
    # The warm-up overlaps Prometheus' first scrape (5-6 s after it starts); no run starts before both.
    warm_up(session, say=say)
    try:
        lab.wait_scraped(say=say)
    except LabkitError:
        session.close()
        raise
    return session


def warm_up(session: LabSession, *, say: Callable[[str], None] | None = print, max_tokens: int = 8) -> float:
    """One request through the wrapper, so that a fresh lab's first measured request does not pay for the
    model load (and, in a new container, for reading the model file from disk); returns how long it took.

    A failure is reported, not raised: the run's own steady-state check will say what is wrong."""
    say = say or (lambda _line: None)
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{session.wrapper_url}/generate",
            json={"prompt": "Hello", "max_tokens": max_tokens},
            headers=session.config.wrapper_auth_headers(),
            timeout=session.config.backend_timeout_s,
            trust_env=False,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        say(f"warm-up request failed ({exc}); going on")
        return time.monotonic() - started
    took = time.monotonic() - started
    say(f"warmed up: the first request took {took:.1f} s")
    return took


# ---- runs ----------------------------------------------------------------------------------------


@dataclass
class ScenarioRun:
    """What a scenario produced: its run directory, and the result of its load or experiment."""

    run_dir: RunDirectory
    load: LoadResult | None = None
    experiment: ExperimentResult | None = None
    slo: SloReport | None = None
    series_files: list[Path] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.run_dir.path

    def summary(self) -> str:
        if self.experiment is not None:
            return self.experiment.summary()
        lines = [f"run {self.run_dir.run_id}"]
        if self.slo is not None:
            lines.append(f"  SLOs {self.slo.verdict} ({self.slo.requests} requests)")
        return "\n".join(lines)


def _run_dir(run_dir: str | Path | None, out_dir: str | Path | None, scenario: str) -> RunDirectory:
    if run_dir:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return RunDirectory(path)
    return RunDirectory.create(resolve_out_dir(out_dir), scenario)


def _save_series(session: LabSession, run_dir: RunDirectory, start: float, end: float) -> list[Path]:
    """Wait for Prometheus' last scrapes of the run, then keep its series in the run directory. A run
    whose Prometheus is unreachable or refuses the queries keeps its samples and journal; its report
    says the series are missing (nothing is invented)."""
    from labkit.measure.collect import save_prometheus_series

    time.sleep(_FINAL_SCRAPE_WAIT_S)
    try:
        return save_prometheus_series(run_dir.path, session.prometheus_url, start, end + _FINAL_SCRAPE_WAIT_S)
    except PrometheusError as exc:
        logger.warning("the run's Prometheus series were not saved: %s", exc)
        return []


def _load_span(frame: pd.DataFrame, fallback_start: float) -> tuple[float, float]:
    if frame.empty:
        return fallback_start, time.time()
    start = float(frame["intended_send"].min())
    end = float((frame["intended_send"] + frame["e2e_s"].fillna(0)).max())
    return start - 1.0, max(end, start) + 1.0


def baseline(
    session: LabSession,
    *,
    duration_s: float = 60,
    rate: float = 1.0,
    max_tokens: int = 32,
    stream: bool = True,
    seed: int = 0,
    run_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    scenario: str = "baseline",
    progress: bool = True,
) -> ScenarioRun:
    """Open-loop load with nothing broken; the SLOs judged on the client's samples. `scenario` names the
    run directory when `run_dir` is not given."""
    check_bounds(
        scenario,
        PARAMETER_BOUNDS["baseline"],
        {"duration_s": duration_s, "rate": rate, "max_tokens": max_tokens},
    )
    spec = LoadSpec(
        url=session.wrapper_url,
        rate=rate,
        duration_s=duration_s,
        max_tokens=max_tokens,
        stream=stream,
        seed=seed,
        api_key_file=session.config.api_key_file,
    )
    out = _run_dir(run_dir, out_dir, scenario)
    began = time.time()
    result = run_load(spec, out, progress=progress)
    report = evaluate_client_slos(result.frame, load_slo_spec(), duration_s=duration_s)
    report.write(out.path)
    start, end = _load_span(result.frame, began)
    files = _save_series(session, out, start, end)
    return ScenarioRun(out, load=result, slo=report, series_files=files)


def _experiment(
    session: LabSession,
    scenario: str,
    faults: Any,
    *,
    run_dir: str | Path | None,
    out_dir: str | Path | None,
    say: Callable[[str], None] | None,
    **kwargs: Any,
) -> ScenarioRun:
    out = _run_dir(run_dir, out_dir, scenario)
    began = time.time()
    result = run_experiment(session.lab_dir, faults, run_dir=out, scenario=scenario, say=say, **kwargs)
    frame = result.load.frame if result.load is not None else pd.DataFrame()
    start, end = _load_span(frame, began)
    # The steady-state checks are part of the story: the series span the whole experiment.
    files = _save_series(session, out, min(start, began), max(end, time.time()))
    return ScenarioRun(out, load=result.load, experiment=result, slo=result.method_slo, series_files=files)


def kill_and_recover(
    session: LabSession,
    *,
    duration_s: float = 60,
    kill_at_s: float = 20,
    target: str = "model",
    rate: float = 1.0,
    max_tokens: int = 32,
    steady_state_s: float = 10,
    run_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    say: Callable[[str], None] | None = print,
) -> ScenarioRun:
    """SIGKILL one service `kill_at_s` into `duration_s` of load; the supervisor's restart policy brings
    it back. The window after the kill, to the end of the run, is the fault's observation window."""
    check_bounds(
        "kill_and_recover",
        PARAMETER_BOUNDS["kill_and_recover"],
        {
            "duration_s": duration_s,
            "kill_at_s": kill_at_s,
            "target": target,
            "rate": rate,
            "max_tokens": max_tokens,
            "steady_state_s": steady_state_s,
        },
    )
    fault = Fault(kind="kill", target=target, start_s=kill_at_s, duration_s=duration_s - kill_at_s)
    return _experiment(
        session,
        "kill_and_recover",
        [fault],
        run_dir=run_dir,
        out_dir=out_dir,
        say=say,
        duration_s=duration_s,
        rate=rate,
        max_tokens=max_tokens,
        steady_state_s=steady_state_s,
    )


def latency_and_remediation(
    session: LabSession,
    *,
    duration_s: float = 60,
    latency_at_s: float = 5,
    delay_s: float = 1.5,
    threshold_s: float = 1.0,
    breaches_to_act: int = 2,
    dry_run: bool = False,
    rate: float = 1.0,
    max_tokens: int = 16,
    steady_state_s: float = 10,
    run_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    say: Callable[[str], None] | None = print,
) -> ScenarioRun:
    """Latency injected in front of the model from `latency_at_s` to the end of the run; a remediation
    loop reads p95 from Prometheus and restarts the wrapper (which drops the fault) after
    `breaches_to_act` readings above `threshold_s`. With `dry_run` it only journals its decisions."""
    check_bounds(
        "latency_and_remediation",
        PARAMETER_BOUNDS["latency_and_remediation"],
        {
            "duration_s": duration_s,
            "latency_at_s": latency_at_s,
            "delay_s": delay_s,
            "threshold_s": threshold_s,
            "breaches_to_act": breaches_to_act,
            "rate": rate,
            "max_tokens": max_tokens,
            "steady_state_s": steady_state_s,
        },
    )
    fault = Fault(
        kind="latency",
        start_s=latency_at_s,
        duration_s=duration_s - latency_at_s - 1,
        params={"delay_s": delay_s},
    )
    policy = {
        "target": "wrapper",
        "threshold_s": threshold_s,
        "window_s": 5,
        "interval_s": 1,
        "breaches_to_act": breaches_to_act,
        "cooldown_s": duration_s,
        "dry_run": dry_run,
    }
    return _experiment(
        session,
        "latency_and_remediation",
        [fault],
        run_dir=run_dir,
        out_dir=out_dir,
        say=say,
        duration_s=duration_s,
        rate=rate,
        max_tokens=max_tokens,
        steady_state_s=steady_state_s,
        remediation=policy,
    )


def random_chaos(
    session: LabSession,
    *,
    seed: int = 7,
    duration_s: float = 120,
    kinds: Sequence[str] | None = None,
    rate: float = 1.0,
    max_tokens: int = 32,
    steady_state_s: float = 10,
    run_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    say: Callable[[str], None] | None = print,
) -> ScenarioRun:
    """A random schedule drawn from `seed` (same seed, same schedule; printed before it runs)."""
    check_bounds(
        "random_chaos",
        PARAMETER_BOUNDS["random_chaos"],
        {
            "duration_s": duration_s,
            "kinds": [] if kinds is None else list(kinds),
            "rate": rate,
            "max_tokens": max_tokens,
            "steady_state_s": steady_state_s,
        },
    )
    options: dict[str, Any] = {} if kinds is None else {"kinds": list(kinds)}
    schedule = random_schedule(seed, duration_s, **options)
    return _experiment(
        session,
        "random_chaos",
        schedule,
        run_dir=run_dir,
        out_dir=out_dir,
        say=say,
        duration_s=duration_s,
        rate=rate,
        max_tokens=max_tokens,
        steady_state_s=steady_state_s,
    )


# ---- setup check ---------------------------------------------------------------------------------


def check_setup(session: LabSession | None = None) -> pd.DataFrame:
    """What this machine has for the lab, one row per check: `ok` (True, False, or None for optional
    parts that are simply absent, such as a GPU) and what was found."""
    rows: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, found: str) -> None:
        rows.append({"check": name, "ok": ok, "found": found})

    check("python", sys.version_info >= (3, 11), platform.python_version())
    check("labkit", True, __version__)
    for binary, needed in (("prometheus", True), ("promtool", True), ("stress-ng", False)):
        path = shutil.which(binary)
        missing = "not on PATH" + ("" if needed else " (cpu_stress faults need it; random_chaos draws them)")
        check(binary, True if path else (False if needed else None), path or missing)
    # The real model's parts are needed only where the lab runs (or will run) the llama engine.
    needs_llama = session is None or session.config.engine == "llama"

    def model_part(name: str, present: bool, found: str) -> None:
        check(name, True if present else (False if needs_llama else None), found)

    llama = importlib.util.find_spec("llama_cpp") is not None
    model_part("llama-cpp-python", llama, "importable" if llama else "missing: pip install '.[llama]'")
    try:
        model = embedded_model_path()
        model_part("model file", model.is_file(), str(model))
    except LabkitError as exc:
        model_part("model file", False, str(exc))
    gpus = GpuReader().read()
    check(
        "GPU (NVML)",
        True if gpus else None,
        ", ".join(g.name for g in gpus) if gpus else "no GPU on this machine",
    )
    if session is not None:
        for svc in session.backend.status():
            check(f"service {svc.name}", svc.state in ("ready", "external"), f"{svc.state} {svc.url}")
        try:
            answer = httpx.post(
                f"{session.wrapper_url}/generate",
                json={"prompt": "Say hi.", "max_tokens": 8},
                headers=session.config.wrapper_auth_headers(),
                timeout=60,
                trust_env=False,
            )
            body = answer.json()
            check(
                "generate",
                answer.status_code == 200,
                f"{answer.status_code}: {body.get('response', body)!r}"[:120],
            )
        except httpx.HTTPError as exc:
            check("generate", False, f"{type(exc).__name__}: {exc}")
    return pd.DataFrame(rows)
