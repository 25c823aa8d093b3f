"""The parameters of every notebook, each declared once: its type, default, help line, bound and `--quick`
value (labkit.params). `labkit run` checks a run's values against these before anything starts,
`--help-params` prints them, `--quick` takes their small values, and each notebook's parameters cell is the
spec's `parameters_cell()` (a test compares them; `python -m generators.notebooks` rewrites the cells).
"""

from __future__ import annotations

from typing import Annotated, Self, get_args

from pydantic import model_validator

from labkit.chaos import MAX_RUN_S
from labkit.config import BackendName, Engine
from labkit.faults import FAULT_KINDS, FAULT_TARGETS
from labkit.measure.capacity import MAX_REPEATS
from labkit.measure.load_apis import LOAD_APIS
from labkit.params import Bound, Params, param

__all__ = [
    "REPORT_NOTEBOOK",
    "RESERVED_PARAMETERS",
    "Alerting",
    "Baseline",
    "Capacity",
    "CheckSetup",
    "ExperimentParams",
    "KillAndRecover",
    "LabParams",
    "LatencyAndRemediation",
    "LoadParams",
    "RandomChaos",
    "SloReport",
    "WorkshopExperiment",
    "WorkshopPredictP95",
]

# The types the notebooks share: each bound once.
LoadSeconds = Annotated[float, Bound(0, MAX_RUN_S, low_open=True, unit="s")]
Rate = Annotated[float, Bound(0, 1000, low_open=True, unit="requests/s")]
MaxTokens = Annotated[int, Bound(1, 4096)]
SteadySeconds = Annotated[float, Bound(0, 600, low_open=True, unit="s")]
LoadApiName = Annotated[str, Bound(choices=LOAD_APIS)]

_DURATION_HELP = "how long the method sends load, in seconds"
_RATE_HELP = "requests per second"
_TOKENS_HELP = "tokens generated per request"
_STEADY_HELP = "load before and after, judged against the SLOs"
_API_HELP = "the API the load speaks: generate, openai-chat or openai-completions"


class LabParams(Params):
    """A notebook that runs the lab: the lab it uses or starts, and where its run goes. `labkit run` sets
    these itself (`set_by` says how a person sets them instead); a notebook's cell lists them last."""

    lab_dir: str = param(
        "",
        "the lab directory, empty for the default one (a lab is started there if none runs)",
        set_by="use the global option: labkit --lab-dir DIR run ...",
    )
    engine: Annotated[str, Bound(choices=get_args(Engine))] = param(
        "llama",
        "model engine for a lab this notebook starts: llama (SmolLM2) or sim",
        set_by="use --engine llama|sim|ollama|llamacpp-server|openai (openai: with LABKIT_OPENAI_URL)",
    )
    backend: Annotated[str, Bound(choices=get_args(BackendName))] = param(
        "local",
        "where a lab this notebook starts runs: local (processes) or docker (containers)",
        set_by="use --backend local|docker",
    )
    run_dir: str = param(
        "",
        "where this run writes, empty for a new run directory under out_dir",
        set_by="labkit run makes a new run directory for every run (under --out)",
    )
    out_dir: str = param(
        "", "parent folder of run directories, empty for the project reports/runs", set_by="use --out DIR"
    )
    render_report: bool = param(
        True,
        "render the report and index line of a run of its own (run_dir empty)",
        set_by="labkit run renders every run's report itself",
    )


class LoadParams(LabParams):
    """Open-loop load: how long, how fast, how long each answer."""

    duration_s: LoadSeconds = param(60, "how long to send load, in seconds", quick=10)
    rate: Rate = param(1.0, "requests per second (open loop: sent on schedule whatever the lab does)")
    max_tokens: MaxTokens = param(32, _TOKENS_HELP)
    seed: int = param(0, "seeds the prompts and arrival times")
    api: LoadApiName = param("generate", _API_HELP)


class ExperimentParams(LabParams):
    """A chaos experiment's load and steady-state checks."""

    duration_s: LoadSeconds = param(60, _DURATION_HELP)
    rate: Rate = param(1.0, _RATE_HELP)
    max_tokens: MaxTokens = param(32, _TOKENS_HELP)
    steady_state_s: SteadySeconds = param(10, _STEADY_HELP, quick=3)
    api: LoadApiName = param("generate", _API_HELP)


class CheckSetup(LoadParams):
    scenario = "check_setup"

    duration_s: LoadSeconds = param(5, "how long to send test requests to the lab, in seconds")
    rate: Rate = param(1.0, "test requests per second")
    max_tokens: MaxTokens = param(16, _TOKENS_HELP)


class Baseline(LoadParams):
    scenario = "baseline"


class KillAndRecover(ExperimentParams):
    scenario = "kill_and_recover"

    duration_s: LoadSeconds = param(60, _DURATION_HELP, quick=20)
    kill_at_s: Annotated[float, Bound(0, below="duration_s", unit="s")] = param(
        20, "when the kill happens, seconds into the method", quick=6
    )
    target: Annotated[str, Bound(choices=FAULT_TARGETS["kill"])] = param(
        "model", "the service killed: model, wrapper or prometheus"
    )


class LatencyAndRemediation(ExperimentParams):
    scenario = "latency_and_remediation"

    duration_s: LoadSeconds = param(60, _DURATION_HELP, quick=24)
    max_tokens: MaxTokens = param(16, _TOKENS_HELP)
    # the fault lasts to 1 s before the end of the method: it must start before that
    latency_at_s: Annotated[float, Bound(0, below="duration_s", margin=1, unit="s")] = param(
        5, "when the latency starts, seconds into the method"
    )
    delay_s: Annotated[float, Bound(0, 60, low_open=True, unit="s")] = param(
        1.5, "latency added to every model call, in seconds"
    )
    threshold_s: Annotated[float, Bound(0, 600, low_open=True, unit="s")] = param(
        1.0, "p95 latency above this is a breach, in seconds"
    )
    breaches_to_act: Annotated[int, Bound(1, 100)] = param(2, "consecutive breaches before the restart")
    dry_run: bool = param(False, "journal the decision, restart nothing")


class RandomChaos(ExperimentParams):
    scenario = "random_chaos"

    duration_s: LoadSeconds = param(120, _DURATION_HELP, quick=30)
    seed: int = param(7, "the schedule's seed: same seed, same schedule")
    kinds: Annotated[str, Bound(choices=FAULT_KINDS, many=True)] = param(
        "", "comma-separated fault kinds to draw from, empty for the default mix"
    )

    @property
    def kind_list(self) -> list[str] | None:
        """`kinds` as a list; None for the default mix."""
        return [k.strip() for k in self.kinds.split(",") if k.strip()] or None


class Alerting(ExperimentParams):
    """A fault-free baseline, an error storm long enough for the lab profile's fast page (14.4x over 2m and
    10s) to fire by the rules' arithmetic, a kill of the model, and recovery for the pages to resolve."""

    scenario = "alerting"

    duration_s: LoadSeconds = param(300, _DURATION_HELP, quick=100)
    # 20 events in the fast page's 10 s short window (the spec's alert_min_events) need 2 requests/s
    rate: Rate = param(4.0, "requests per second (a page needs 20 events in its 10 s short window)")
    max_tokens: MaxTokens = param(
        8, "tokens generated per request (short: a CPU model keeps up with the rate)"
    )
    baseline_s: Annotated[float, Bound(0, below="duration_s", unit="s")] = param(
        120, "fault-free load before the storm, seconds into the method", quick=30
    )
    storm_s: Annotated[float, Bound(0, 3600, low_open=True, unit="s")] = param(
        60, "how long the wrapper answers errors, in seconds", quick=30
    )
    error_probability: Annotated[float, Bound(0, 1, low_open=True)] = param(
        0.5, "chance that a request gets a 5xx during the storm"
    )
    kill_after_s: Annotated[float, Bound(0, 3600, low_open=True, unit="s")] = param(
        40, "seconds from the storm's end to the kill of the model", quick=20
    )

    @property
    def kill_at_s(self) -> float:
        return self.baseline_s + self.storm_s + self.kill_after_s

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.kill_at_s + ALERTING_RECOVERY_S > self.duration_s:
            raise ValueError(
                f"baseline_s + storm_s + kill_after_s = {self.kill_at_s:g} s leaves less than "
                f"{ALERTING_RECOVERY_S:g} s of recovery in duration_s = {self.duration_s:g} s; "
                "raise duration_s or shorten the phases"
            )
        return self


class Capacity(LabParams):
    """The capacity search (labkit.measure.capacity, docs/capacity.md): the highest offered rate at which
    every SLO holds, by a sweep and a bisection over open-loop points, over-saturated points stopped early."""

    scenario = "capacity"

    point_s: LoadSeconds = param(30, "how long each load point sends, in seconds", quick=6)
    min_requests: Annotated[int, Bound(1, 10_000)] = param(
        10, "each point lasts long enough for this many requests at its rate", quick=5
    )
    start_rate: Rate = param(1.0, "the sweep's first rate, requests per second (then doubled or halved)")
    max_rate: Rate = param(1000.0, "the sweep doubles no further, requests per second")
    precision: Annotated[float, Bound(0, 1, low_open=True)] = param(
        0.05, "bisect until the first failing rate is within this share above the last passing one", quick=0.1
    )
    repeats: Annotated[int, Bound(1, MAX_REPEATS)] = param(
        1, "knee measurements: 2 or more give a confidence interval (each a bisection of its own)"
    )
    max_search_s: Annotated[float, Bound(0, 86_400, low_open=True, unit="s")] = param(
        1800, "the search's time bound, in seconds", quick=150
    )
    max_tokens: MaxTokens = param(64, _TOKENS_HELP, quick=16)
    arrival: Annotated[str, Bound(choices=("constant", "poisson"))] = param(
        "constant", "arrivals within a point: constant spacing or seeded Poisson"
    )
    seed: int = param(0, "seeds the prompts and arrival times (each point adds its index)")
    api: LoadApiName = param("generate", _API_HELP)

    @model_validator(mode="after")
    def _one_point_fits(self) -> Self:
        if self.max_search_s < self.point_s:
            raise ValueError(
                f"max_search_s = {self.max_search_s:g} s leaves no time for one point of point_s = "
                f"{self.point_s:g} s; raise max_search_s or shorten point_s"
            )
        return self


# The least time the alerting scenario keeps after its kill: the fast page's 10 s short window, Alertmanager's
# group interval and a scrape, so that a page the kill raised can resolve before the method ends.
ALERTING_RECOVERY_S = 20.0


class SloReport(Params):
    """05_slo_report: the run it reports on (it starts nothing)."""

    scenario = "05_slo_report"

    run_dir: str = param(
        "",
        "the run to report on, empty for the newest run under out_dir",
        set_by="labkit report RUN_DIR names it; labkit run passes each run's own",
    )
    out_dir: str = param(
        "", "where runs are looked for when run_dir is empty, empty for reports/runs", set_by="use --out DIR"
    )


class WorkshopPredictP95(LoadParams):
    scenario = "W1_predict_the_p95"

    duration_s: LoadSeconds = param(30, "how long each load run lasts, in seconds")
    rate: Rate = param(0.5, "the first rate, requests per second")
    faster: Rate = param(2.0, "the rate you will predict for")


class WorkshopExperiment(ExperimentParams):
    scenario = "W2_your_first_experiment"

    duration_s: LoadSeconds = param(30, _DURATION_HELP)
    pause_s: Annotated[float, Bound(0, 600, low_open=True, unit="s")] = param(
        3, "how long the model server is paused"
    )
    steady_state_s: SteadySeconds = param(5, _STEADY_HELP)


# The report notebook, run for every run (`labkit run`, `labkit report`).
REPORT_NOTEBOOK = "05_slo_report.ipynb"

# What `labkit run` sets itself, and what a person passes instead of `-p NAME VALUE`.
RESERVED_PARAMETERS: dict[str, str] = LabParams.set_by_runner()
