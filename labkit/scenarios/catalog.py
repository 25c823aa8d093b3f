"""The scenarios `labkit run` knows, each a notebook with its parameter spec and a title; and every notebook
of notebooks/ with its spec (the scenarios, the report, the workshop's), which a test holds the cells to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from labkit.params import Params
from labkit.scenarios.specs import (
    REPORT_NOTEBOOK,
    Alerting,
    Baseline,
    Capacity,
    CheckSetup,
    KillAndRecover,
    LatencyAndRemediation,
    RandomChaos,
    RemediationAB,
    SloReport,
    WorkshopCapacity,
    WorkshopExperiment,
    WorkshopPredictP95,
    WorkshopSloPage,
)

__all__ = ["NOTEBOOK_PARAMS", "SCENARIOS", "WORKSHOP_NOTEBOOKS", "WORKSHOP_SOLUTIONS", "Scenario"]


@dataclass(frozen=True)
class Scenario:
    """One runnable scenario: the notebook that narrates it and the spec of its parameters."""

    notebook: str  # file name in notebooks/
    title: str
    params: type[Params]

    @property
    def name(self) -> str:
        return self.params.scenario

    @property
    def quick(self) -> dict[str, Any]:
        """The small parameters CI runs it with (`--quick`)."""
        return self.params.quick()

    def check_parameters(self, values: Mapping[str, Any]) -> None:
        """ParameterError (a ConfigError) naming the first of `values` its spec refuses."""
        self.params.check(values)

    def bound(self, name: str) -> str | None:
        """What values parameter `name` may take, in words, or None when any of its type."""
        bound = self.params.bounds().get(name)
        return None if bound is None else bound.describe(self.params.defaults())


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("00_check_setup.ipynb", "Check the setup", CheckSetup),
        Scenario("01_baseline.ipynb", "Baseline: the SLOs with nothing broken", Baseline),
        Scenario("02_kill_and_recover.ipynb", "Kill the model server and watch it recover", KillAndRecover),
        Scenario(
            "03_latency_and_remediation.ipynb",
            "Injected latency, healed by automated remediation",
            LatencyAndRemediation,
        ),
        Scenario("04_random_chaos.ipynb", "A seeded random chaos schedule", RandomChaos),
        Scenario("06_alerting.ipynb", "Does the pager go off? Alerts proven by an error storm", Alerting),
        Scenario("07_capacity.ipynb", "Capacity: the highest rate that meets every SLO", Capacity),
        Scenario(
            "08_remediation_ab.ipynb",
            "Does remediation help? The same faults with remediation off and on",
            RemediationAB,
        ),
    )
}

# The workshop's exercises (notebooks/workshop/), each with its solution of the same name in solutions/.
WORKSHOP_NOTEBOOKS: dict[str, type[Params]] = {
    "W1_predict_the_p95.ipynb": WorkshopPredictP95,
    "W2_your_first_experiment.ipynb": WorkshopExperiment,
    "W3_write_an_slo.ipynb": WorkshopSloPage,
    "W4_find_the_capacity.ipynb": WorkshopCapacity,
}
WORKSHOP_SOLUTIONS = "solutions"

# Every notebook of notebooks/ and its spec.
NOTEBOOK_PARAMS: dict[str, type[Params]] = {
    **{s.notebook: s.params for s in SCENARIOS.values()},
    REPORT_NOTEBOOK: SloReport,
    **{
        f"workshop/{folder}{name}": spec
        for name, spec in WORKSHOP_NOTEBOOKS.items()
        for folder in ("", f"{WORKSHOP_SOLUTIONS}/")
    },
}
