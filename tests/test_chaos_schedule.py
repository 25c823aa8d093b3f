"""labkit.chaos schedules: seeded determinism, fitting in the run, no same-kind overlaps, a stable plan."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from labkit.chaos import (
    FAULT_KINDS,
    Fault,
    Schedule,
    check_schedule_fits,
    plan_text,
    random_schedule,
)
from labkit.errors import ConfigError


def test_the_same_seed_gives_the_identical_schedule_and_plan() -> None:
    first, second = random_schedule(7, 120), random_schedule(7, 120)
    assert first == second
    assert first.faults  # a two-minute run at a 10 s mean gap holds faults
    assert plan_text(first) == plan_text(second)


def test_a_different_seed_gives_a_different_schedule() -> None:
    assert random_schedule(8, 120) != random_schedule(7, 120)
    assert plan_text(random_schedule(8, 120)) != plan_text(random_schedule(7, 120))


def test_the_schedule_of_a_seed_is_the_same_in_another_process() -> None:
    # String seeds are hashed with SHA-512, not hash(): PYTHONHASHSEED must not matter.
    code = "from labkit.chaos import random_schedule, plan_text; print(plan_text(random_schedule(7, 120)))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {plan_text(random_schedule(7, 120)) + "\n"}


def test_random_faults_fit_in_the_run_and_never_overlap() -> None:
    for seed in range(20):
        schedule = random_schedule(seed, 90, mean_gap_s=3, fault_duration_s=(1, 6))
        assert schedule.seed == seed and schedule.duration_s == 90
        ends = 0.0
        for fault in schedule.faults:
            assert fault.start_s >= ends  # one after the other
            assert 1 <= fault.duration_s <= 6
            ends = fault.end_s
        assert ends <= 90


def test_random_schedules_use_only_the_kinds_and_targets_given() -> None:
    schedule = random_schedule(3, 300, kinds=["pause", "kill"], targets=["wrapper"], mean_gap_s=5)
    assert {f.kind for f in schedule.faults} == {"pause", "kill"}
    assert {f.target for f in schedule.faults} == {"wrapper"}
    every = random_schedule(3, 3600, mean_gap_s=5)
    assert {f.kind for f in every.faults} == set(FAULT_KINDS)
    assert {f.target for f in every.faults} <= {"model", "wrapper", "machine"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ["explode"]}, r"^kinds: unknown fault kind 'explode'"),
        ({"kinds": []}, r"^kinds: give at least one"),
        ({"targets": ["database"]}, r"^targets: 'database' is not a lab target"),
        ({"kinds": ["latency"], "targets": ["wrapper"]}, r"^targets: none of \['wrapper'\] fits a latency"),
        ({"mean_gap_s": 0}, r"^mean_gap_s: must be a number"),
        ({"fault_duration_s": (5, 1)}, r"^fault_duration_s: the shortest"),
        ({"fault_duration_s": (0, 1)}, r"^fault_duration_s\[0\]: must be a number"),
        ({"fault_duration_s": 5}, r"^fault_duration_s: must be a pair"),
    ],
)
def test_bad_random_arguments_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        random_schedule(1, 60, **kwargs)


@pytest.mark.parametrize(
    ("seed", "duration", "message"),
    [
        ("7", 60, r"^seed: must be an integer"),
        (7, -5, r"^duration_s: must be a number"),
        (7, 1e6, "duration_s"),
    ],
)
def test_bad_random_seed_or_duration(seed: Any, duration: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        random_schedule(seed, duration)


def test_explicit_schedules_are_sorted_by_start() -> None:
    schedule = Schedule(
        faults=[
            Fault(kind="kill", start_s=20, duration_s=5),
            {"kind": "latency", "start_s": 5, "duration_s": 5},
            Fault(kind="pause", target="wrapper", start_s=5, duration_s=1),
        ]
    )
    assert [(f.kind, f.start_s) for f in schedule.faults] == [("latency", 5), ("pause", 5), ("kill", 20)]
    assert schedule.end_s == 25 and len(schedule) == 3


def test_a_schedule_names_the_bad_fault_by_its_index() -> None:
    with pytest.raises(ConfigError, match=r"faults\[1\]\.duration_s: Input should be greater than 0"):
        Schedule(faults=[{"kind": "pause", "duration_s": 1}, {"kind": "kill", "duration_s": -1}])
    with pytest.raises(ConfigError, match=r"faults\[0\]: must be a Fault or a mapping"):
        Schedule(faults=["pause"])


def test_same_kind_faults_on_one_target_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match=r"faults\[1\]: pause on model at 5 s .* overlaps faults\[0\]"):
        Schedule(faults=[Fault(kind="pause", duration_s=10), Fault(kind="pause", start_s=5, duration_s=10)])
    # Back to back, other targets or other kinds are fine.
    Schedule(
        faults=[
            Fault(kind="pause", duration_s=10),
            Fault(kind="pause", start_s=10, duration_s=10),
            Fault(kind="pause", target="wrapper", start_s=5, duration_s=10),
            Fault(kind="latency", start_s=5, duration_s=10),
        ]
    )


def test_a_schedule_longer_than_the_run_is_refused() -> None:
    schedule = Schedule(faults=[Fault(kind="latency", start_s=50, duration_s=20)])
    with pytest.raises(
        ConfigError, match=r"faults\[0\]: latency on model at 50 s for 20 s .* ends at 70 s, after "
    ):
        check_schedule_fits(schedule, 60)
    check_schedule_fits(schedule, 70)
    with pytest.raises(ConfigError, match=r"ends at 70 s, after the run's 60 s"):
        Schedule(duration_s=60, faults=schedule.faults)


def test_plan_text_is_a_stable_table() -> None:
    schedule = Schedule(
        faults=[
            Fault(kind="latency", start_s=5, duration_s=10, params={"delay_s": 0.5}),
            Fault(kind="kill", target="wrapper", start_s=20, duration_s=8),
            Fault(kind="cpu_stress", start_s=30, duration_s=5, params={"workers": 1}),
            Fault(kind="error", start_s=0, duration_s=4.25, params={"probability": 0.25, "status": 500}),
        ]
    )
    assert plan_text(schedule, duration_s=40) == (
        "chaos schedule (explicit, run 40 s): 4 faults\n"
        "#  start_s  end_s  kind        target   duration_s  params\n"
        "1      0.0   4.25  error       model          4.25  probability=0.25 status=500\n"
        "2      5.0   15.0  latency     model          10.0  delay_s=0.5 jitter_s=0\n"
        "3     20.0   28.0  kill        wrapper        8.0*  -\n"
        "4     30.0   35.0  cpu_stress  machine         5.0  workers=1\n"
        "* instantaneous: the duration is the window in which the run watches the effect"
    )
    assert plan_text(list(schedule.faults), duration_s=40) == plan_text(schedule, duration_s=40)


def test_plan_text_of_a_seeded_and_an_empty_schedule() -> None:
    assert plan_text(random_schedule(7, 60)).startswith("chaos schedule (seed 7, run 60 s): ")
    assert plan_text([]) == "chaos schedule (explicit): 0 faults - the run is a baseline with load only"


def test_a_fault_starting_as_the_previous_one_ends_does_not_overlap_it() -> None:
    # 156.8 + 13.8 is 170.60000000000002 in floating point; the second fault starts at 170.6, when the
    # first has ended (random schedules with short gaps drew exactly this and refused their own schedule).
    first = Fault(kind="kill", target="wrapper", start_s=156.8, duration_s=13.8)
    second = Fault(kind="kill", target="wrapper", start_s=170.6, duration_s=8.3)
    assert len(Schedule(faults=(first, second), duration_s=300)) == 2
    overlapping = Fault(kind="kill", target="wrapper", start_s=170.5, duration_s=8.3)
    with pytest.raises(ConfigError, match="overlaps"):
        Schedule(faults=(first, overlapping), duration_s=300)
