"""The parameters of every notebook, each declared once: its type, default, help line, bound and `--quick`
value (labkit.params). `labkit run` checks a run's values against these before anything starts,
`--help-params` prints them, `--quick` takes their small values, and each notebook's parameters cell is the
spec's `parameters_cell()` (a test compares them; `python -m generators.notebooks` rewrites the cells).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Self, get_args

from pydantic import model_validator

from labkit.chaos import MAX_RUN_S, RemediationPolicy
from labkit.config import BackendName, Engine
from labkit.faults import FAULT_KINDS, FAULT_TARGETS
from labkit.measure.capacity import MAX_REPEATS
from labkit.measure.load_apis import LOAD_APIS, STEADY_ARRIVALS
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
    "RemediationAB",
    "SloReport",
    "WorkshopCapacity",
    "WorkshopExperiment",
    "WorkshopPredictP95",
    "WorkshopSloPage",
]

# The types the notebooks share: each bound once.
LoadSeconds = Annotated[float, Bound(0, MAX_RUN_S, low_open=True, unit="s")]
Rate = Annotated[float, Bound(0, 1000, low_open=True, unit="requests/s")]
MaxTokens = Annotated[int, Bound(1, 4096)]
SteadySeconds = Annotated[float, Bound(0, 600, low_open=True, unit="s")]
LoadApiName = Annotated[str, Bound(choices=LOAD_APIS)]
ArrivalName = Annotated[str, Bound(choices=STEADY_ARRIVALS)]
Burstiness = Annotated[float, Bound(0, low_open=True)]

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
    arrival: ArrivalName = param("constant", "spacing of the requests: constant, poisson or gamma (bursty)")
    burstiness: Burstiness = param(
        1.0, "gamma arrivals: the gaps' shape, 1 Poisson, below 1 burstier, above 1 more regular"
    )


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


class RemediationAB(LabParams):
    """The remediation A/B: one fault per arm on the same timeline and the same seeded load, `runs_per_arm`
    arms with remediation off (its loop in dry run) and as many with it on, interleaved; per fault kind a
    verdict from a stated test (labkit.measure.remediation_ab.AbTest; SLO.md, "The remediation A/B")."""

    scenario = "remediation_ab"

    kinds: Annotated[str, Bound(choices=FAULT_KINDS, many=True)] = param(
        "latency", "comma-separated fault kinds, each its own A/B (empty: latency)"
    )
    runs_per_arm: Annotated[int, Bound(1, 50)] = param(
        5, "runs with remediation off, and as many on (a verdict needs at least 3 each)", quick=3
    )
    duration_s: LoadSeconds = param(40, "how long each arm's method sends load, in seconds", quick=14)
    rate: Rate = param(4.0, "requests per second (the p95 trigger needs a few requests per window)")
    max_tokens: MaxTokens = param(8, _TOKENS_HELP)
    api: LoadApiName = param("generate", _API_HELP)
    seed: int = param(0, "seeds the load's prompts and the error fault's draws: the same in every arm")
    fault_at_s: Annotated[float, Bound(0, below="duration_s", unit="s")] = param(
        5, "when the fault starts, seconds into each arm's method", quick=2
    )
    after_s: Annotated[float, Bound(0, 600, low_open=True, unit="s")] = param(
        5, "load after the fault's planned end, where an arm without remediation recovers", quick=2
    )
    delay_s: Annotated[float, Bound(0, 60, low_open=True, unit="s")] = param(
        1.5, "latency: seconds added to every model call"
    )
    error_probability: Annotated[float, Bound(0, 1, low_open=True)] = param(
        0.5, "error: chance that a request gets a 5xx"
    )
    cpu_workers: Annotated[int, Bound(0, 1024)] = param(0, "cpu_stress: stress-ng workers, 0 for one per CPU")
    threshold_s: Annotated[float, Bound(0, 600, low_open=True, unit="s")] = param(
        1.0, "p95 above this is a breach; in both arms a request above it is slow"
    )
    window_s: Annotated[float, Bound(2, 600, unit="s")] = param(
        5, "the p95 trigger's rate window, in seconds", quick=3
    )
    breaches_to_act: Annotated[int, Bound(1, 100)] = param(2, "consecutive breaches before the restart")
    on_alert: str = param(
        "", "restart on a firing notification of this alert name instead of on p95 (empty: p95)"
    )
    steady_state_s: Annotated[float, Bound(0, 600, unit="s")] = param(
        0, "load before and after each arm, judged by the SLOs; 0: none (shorter arms)"
    )
    gap_s: Annotated[float, Bound(0, 600, unit="s")] = param(
        5, "quiet seconds before an arm with remediation (at least the p95 window and 2 scrapes)"
    )
    min_effect_s: Annotated[float, Bound(0, 600, unit="s")] = param(
        1.0, "the test's minimum effect: the interval must clear zero by this much"
    )
    confidence: Annotated[float, Bound(0.5, 1, high_open=True)] = param(
        0.95, "the bootstrap interval's confidence"
    )

    @property
    def kind_list(self) -> list[str]:
        """`kinds` as a list, in the order given (latency when empty), each once."""
        return list(dict.fromkeys(k.strip() for k in self.kinds.split(",") if k.strip())) or ["latency"]

    @model_validator(mode="after")
    def _fault_fits(self) -> Self:
        if self.fault_at_s + self.after_s >= self.duration_s:
            raise ValueError(
                f"fault_at_s + after_s = {self.fault_at_s + self.after_s:g} s leaves the fault no time in "
                f"duration_s = {self.duration_s:g} s; raise duration_s or lower fault_at_s or after_s"
            )
        self.remediation(dry_run=False)  # a bad alert name is refused now, before any arm runs
        return self

    def remediation(self, *, dry_run: bool) -> RemediationPolicy:
        """The remediation of an arm: restart the wrapper on p95 (or on the alert `on_alert`), once per arm
        at most (the cooldown spans the arm: a restart that does not cure must not loop); `dry_run` for the
        arms without remediation, which run the same loop and restart nothing."""
        trigger: dict[str, Any] = (
            {"on_alert": self.on_alert}
            if self.on_alert
            else {
                "threshold_s": self.threshold_s,
                "window_s": self.window_s,
                "breaches_to_act": self.breaches_to_act,
            }
        )
        try:
            return RemediationPolicy.model_validate(
                {
                    "target": "wrapper",
                    "interval_s": 1,
                    "cooldown_s": self.duration_s,
                    "dry_run": dry_run,
                    **trigger,
                }
            )
        except ValueError as exc:
            raise ValueError(
                f"on_alert {self.on_alert!r} is not an alert name: letters, digits, '_' and ':', not "
                "starting with a digit, at most 58 characters"
            ) from exc


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


# The workshop's notebooks (notebooks/workshop/, their solutions in solutions/) always make their own run
# directories, and `labkit run` does not run them: they declare no run_dir (a class variable that shadows the
# field: pydantic drops it, the scenario calls read "", mypy needs telling).


class WorkshopPredictP95(LoadParams):
    scenario = "W1_predict_the_p95"
    run_dir: ClassVar[str] = ""  # type: ignore[misc]  # not a parameter here: see above

    duration_s: LoadSeconds = param(30, "how long each load run lasts, in seconds")
    rate: Rate = param(0.5, "the first rate, requests per second")
    faster: Rate = param(3.0, "the rate you will predict for")


class WorkshopExperiment(ExperimentParams):
    scenario = "W2_your_first_experiment"
    run_dir: ClassVar[str] = ""  # type: ignore[misc]  # not a parameter here: see above

    duration_s: LoadSeconds = param(30, _DURATION_HELP)
    pause_s: Annotated[float, Bound(0, 600, low_open=True, unit="s")] = param(
        3, "how long the model server is paused"
    )
    steady_state_s: SteadySeconds = param(5, _STEADY_HELP)


class WorkshopSloPage(Alerting):
    """W3: the alerting scenario, at a length a workshop can wait for."""

    scenario = "W3_write_an_slo"
    run_dir: ClassVar[str] = ""  # type: ignore[misc]  # not a parameter here: see above

    duration_s: LoadSeconds = param(100, _DURATION_HELP)
    baseline_s: Annotated[float, Bound(0, below="duration_s", unit="s")] = param(
        30, "fault-free load before the storm, seconds into the method"
    )
    storm_s: Annotated[float, Bound(0, 3600, low_open=True, unit="s")] = param(
        30, "how long the wrapper answers errors, in seconds"
    )
    kill_after_s: Annotated[float, Bound(0, 3600, low_open=True, unit="s")] = param(
        20, "seconds from the storm's end to the kill of the model"
    )


class WorkshopCapacity(Capacity):
    """W4: the capacity search, bounded to a few minutes."""

    scenario = "W4_find_the_capacity"
    run_dir: ClassVar[str] = ""  # type: ignore[misc]  # not a parameter here: see above

    point_s: LoadSeconds = param(10, "how long each load point sends, in seconds")
    precision: Annotated[float, Bound(0, 1, low_open=True)] = param(
        0.2, "bisect until the first failing rate is within this share above the last passing one"
    )
    max_search_s: Annotated[float, Bound(0, 86_400, low_open=True, unit="s")] = param(
        240, "the search's time bound, in seconds"
    )
    max_tokens: MaxTokens = param(32, _TOKENS_HELP)


# The report notebook, run for every run (`labkit run`, `labkit report`).
REPORT_NOTEBOOK = "05_slo_report.ipynb"

# What `labkit run` sets itself, and what a person passes instead of `-p NAME VALUE`.
RESERVED_PARAMETERS: dict[str, str] = LabParams.set_by_runner()
