"""The fault contract (labkit.faults): each bad input is one ConfigError naming the field; defaults."""

from __future__ import annotations

from typing import Any

import pytest

from labkit.errors import ConfigError
from labkit.faults import FAULT_KINDS, FAULT_TARGETS, INSTANT_KINDS, Fault


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kind": "explode", "duration_s": 5},
            r"^invalid fault: kind: Input should be 'kill'.*got 'explode'",
        ),
        ({"kind": "pause", "duration_s": -1}, r"duration_s: Input should be greater than 0"),
        ({"kind": "pause", "duration_s": 0}, r"duration_s: Input should be greater than 0"),
        ({"kind": "pause", "duration_s": 3601}, r"duration_s: Input should be less than or equal to 3600"),
        ({"kind": "pause"}, r"duration_s: Field required"),
        ({"kind": "pause", "duration_s": "5"}, r"duration_s: Input should be a valid number"),
        (
            {"kind": "pause", "duration_s": 5, "start_s": -0.5},
            r"start_s: Input should be greater than or equal",
        ),
        (
            {"kind": "kill", "target": "exporter", "duration_s": 5},
            r"target: 'exporter' is not a target of a kill",
        ),
        ({"kind": "kill", "target": "database", "duration_s": 5}, r"target: 'database' is not a target"),
        (
            {"kind": "latency", "target": "wrapper", "duration_s": 5},
            r"target: 'wrapper' .* use model \(the wrapper",
        ),
        ({"kind": "cpu_stress", "target": "model", "duration_s": 5}, r"target: 'model' .* use machine"),
        (
            {"kind": "latency", "duration_s": 5, "params": {"delay_s": 0}},
            r"params\.delay_s: .*greater than 0",
        ),
        (
            {"kind": "latency", "duration_s": 5, "params": {"delay_s": 61}},
            r"params\.delay_s: .*less than or equal",
        ),
        (
            {"kind": "latency", "duration_s": 5, "params": {"delay": 1}},
            r"params\.delay: unknown parameter.*delay_s",
        ),
        (
            {"kind": "error", "duration_s": 5, "params": {"probability": 1.5}},
            r"params\.probability: .*less than",
        ),
        (
            {"kind": "error", "duration_s": 5, "params": {"probability": True}},
            r"params\.probability: .*valid number",
        ),
        (
            {"kind": "error", "duration_s": 5, "params": {"status": 404}},
            r"params\.status: Input should be 500",
        ),
        ({"kind": "stream_cut", "duration_s": 5, "params": {"after_tokens": 0}}, r"params\.after_tokens: "),
        (
            {"kind": "cpu_stress", "duration_s": 5, "params": {"workers": 0}},
            r"params\.workers: .*greater than",
        ),
        (
            {"kind": "cpu_stress", "duration_s": 5, "params": {"workers": 10_000}},
            r"params\.workers: at most \d+",
        ),
        (
            {"kind": "kill", "duration_s": 5, "params": {"signal": 9}},
            r"params\.signal: a kill fault takes no param",
        ),
        ({"kind": "pause", "duration_s": 5, "params": [1]}, r"params: must be a mapping"),
        ({"kind": "pause", "duration_s": 5, "when": 3}, r"when: unknown field"),
    ],
)
def test_each_bad_input_is_one_config_error_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Fault(**fields)


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        Fault(kind="latency", duration_s=-1, params={"delay_s": -1})
    assert "duration_s:" in str(caught.value) and "params.delay_s:" in str(caught.value)


def test_targets_and_params_default_per_kind() -> None:
    assert Fault(kind="pause", duration_s=3).target == "model"
    assert Fault(kind="cpu_stress", duration_s=3).target == "machine"
    assert Fault(kind="latency", duration_s=3).params == {"delay_s": 0.5, "jitter_s": 0.0}
    assert Fault(kind="error", duration_s=3).params == {"probability": 0.5, "status": 503}
    assert Fault(kind="stream_cut", duration_s=3).params == {"after_tokens": 4}
    assert Fault(kind="cpu_stress", duration_s=3).params["workers"] >= 1
    assert Fault(kind="kill", duration_s=3).params == {}


def test_every_kind_accepts_each_of_its_targets() -> None:
    for kind in FAULT_KINDS:
        for target in FAULT_TARGETS[kind]:
            assert Fault(kind=kind, target=target, duration_s=1).target == target


def test_faults_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        Fault("pause", "model")  # type: ignore[call-arg, misc]
    fault = Fault(kind="pause", duration_s=3)
    with pytest.raises(ValueError):
        fault.duration_s = 4  # type: ignore[misc]


def test_instantaneous_kinds_and_describe() -> None:
    assert set(INSTANT_KINDS) == {"kill", "restart", "unload"}
    fault = Fault(kind="latency", start_s=10, duration_s=20, params={"delay_s": 0.25})
    assert fault.end_s == 30 and not fault.instantaneous
    assert fault.describe() == "latency on model at 10 s for 20 s (delay_s=0.25 jitter_s=0)"
    assert Fault(kind="kill", target="wrapper", duration_s=5).instantaneous
