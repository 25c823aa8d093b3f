"""Which faults a lab can apply, by what runs its model service: refused before anything starts with a
message that says what to do instead, and never drawn by a random schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from labkit.chaos import (
    applicable_faults,
    fault_refusal,
    load_experiment_file,
    random_schedule,
    remediation_refusal,
)
from labkit.config import LabConfig
from labkit.errors import ConfigError
from labkit.faults import FAULT_KINDS, FAULT_TARGETS, WRAPPER_FAULT_KINDS


def _lab(tmp_path: Path, **settings: object) -> LabConfig:
    return LabConfig(lab_dir=tmp_path, **settings)  # type: ignore[arg-type]


@pytest.fixture
def external_openai(tmp_path: Path) -> LabConfig:
    return _lab(tmp_path, openai_url="http://127.0.0.1:8001/v1")


@pytest.mark.parametrize("kind", ["kill", "restart", "pause"])
def test_the_lab_refuses_to_kill_pause_or_restart_a_model_service_it_does_not_run(
    external_openai: LabConfig, kind: str
) -> None:
    message = fault_refusal(external_openai, kind, "model")  # type: ignore[arg-type]
    assert message is not None
    assert "an OpenAI-compatible service at http://127.0.0.1:8001/v1, which the lab does not run" in message
    assert f"cannot {kind} it" in message and "target the wrapper" in message
    assert "unload" not in message  # not offered: it does not apply either
    assert fault_refusal(external_openai, kind, "wrapper") is None  # type: ignore[arg-type]


def test_the_wrapper_s_faults_apply_whatever_the_upstream(tmp_path: Path, external_openai: LabConfig) -> None:
    for config in (external_openai, _lab(tmp_path, engine="llamacpp-server"), _lab(tmp_path, engine="sim")):
        for kind in WRAPPER_FAULT_KINDS:
            assert fault_refusal(config, kind, "model") is None
        assert fault_refusal(config, "cpu_stress", "machine") is None


def test_unload_needs_ollama_s_api(tmp_path: Path, external_openai: LabConfig) -> None:
    server = _lab(tmp_path, engine="llamacpp-server")
    message = fault_refusal(server, "unload", "model")
    assert message is not None and "OpenAI-compatible API (no unload)" in message
    assert fault_refusal(external_openai, "unload", "model") is not None
    assert fault_refusal(_lab(tmp_path, engine="sim"), "unload", "model") is None
    external_ollama = _lab(tmp_path, engine="ollama", ollama_url="http://127.0.0.1:11500")
    assert fault_refusal(external_ollama, "unload", "model") is None
    assert "an Ollama at http://127.0.0.1:11500" in (fault_refusal(external_ollama, "kill", "model") or "")


def test_a_supervised_llamacpp_server_can_be_killed_paused_and_restarted(tmp_path: Path) -> None:
    server = _lab(tmp_path, engine="llamacpp-server")
    applicable = applicable_faults(server)
    for kind in ("kill", "restart", "pause"):
        assert applicable[kind] == FAULT_TARGETS[kind]
    assert "unload" not in applicable
    assert remediation_refusal(server, "model") is None


def test_applicable_faults_of_an_external_service(external_openai: LabConfig) -> None:
    applicable = applicable_faults(external_openai)
    assert set(applicable) == set(FAULT_KINDS) - {"unload"}
    assert all("model" not in applicable[k] for k in ("kill", "restart", "pause"))
    assert applicable["latency"] == ("model",)


def test_remediation_of_an_external_model_is_refused_with_what_to_do(external_openai: LabConfig) -> None:
    message = remediation_refusal(external_openai, "model")
    assert message is not None
    assert message.startswith("remediation cannot restart the model: it is an OpenAI-compatible service")
    assert "--remediate wrapper" in message
    assert remediation_refusal(external_openai, "wrapper") is None


def test_a_random_schedule_never_draws_a_fault_the_lab_cannot_apply(external_openai: LabConfig) -> None:
    applicable = applicable_faults(external_openai)
    drawn = [
        fault
        for seed in range(40)
        for fault in random_schedule(seed, 300, mean_gap_s=2, applicable=applicable).faults
    ]
    assert len(drawn) > 200
    assert all(fault_refusal(external_openai, f.kind, f.target) is None for f in drawn)
    # What it can apply is still drawn: the wrapper's faults, and kills of the wrapper.
    assert {f.kind for f in drawn} == set(applicable)
    assert any(f.kind == "kill" and f.target == "wrapper" for f in drawn)
    # The same seed and lab give the same schedule.
    assert random_schedule(3, 120, applicable=applicable) == random_schedule(3, 120, applicable=applicable)


def test_asking_a_random_schedule_for_a_kind_that_cannot_apply_is_an_error(
    external_openai: LabConfig,
) -> None:
    applicable = applicable_faults(external_openai)
    with pytest.raises(ConfigError, match=r"kinds: a unload fault cannot apply to this lab"):
        random_schedule(1, 60, kinds=["latency", "unload"], applicable=applicable)
    with pytest.raises(ConfigError, match=r"targets: none of \['model'\] fits a kill fault on this lab"):
        random_schedule(1, 60, kinds=["kill"], targets=["model"], applicable=applicable)


def test_an_experiment_file_s_random_schedule_draws_only_what_applies(
    tmp_path: Path, external_openai: LabConfig
) -> None:
    path = tmp_path / "random.yaml"
    path.write_text("duration_s: 300\nrandom: {seed: 5, mean_gap_s: 2}\n")
    faults = load_experiment_file(path, applicable=applicable_faults(external_openai)).schedule.faults
    assert faults and all(fault_refusal(external_openai, f.kind, f.target) is None for f in faults)
    everything = load_experiment_file(path).schedule.faults  # no lab given: every fault may be drawn
    assert any(fault_refusal(external_openai, f.kind, f.target) is not None for f in everything)


def test_chaos_plan_draws_for_the_running_lab(
    tmp_path: Path, external_openai: LabConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labkit.cli.chaos
    from labkit.cli import cli

    def plan() -> list[list[str]]:
        result = CliRunner().invoke(
            cli, ["--lab-dir", str(tmp_path / "lab"), "chaos", "plan", "--seed", "1", "--duration-s", "600"]
        )
        assert result.exit_code == 0, result.output
        return [line.split()[3:5] for line in result.output.splitlines() if line.strip()[:1].isdigit()]

    alone = plan()  # no lab runs: every fault may be drawn
    assert ["unload", "model"] in alone
    monkeypatch.setattr(labkit.cli.chaos, "_running_lab", lambda backend: external_openai)
    for_the_lab = plan()
    assert for_the_lab and all(
        fault_refusal(external_openai, kind, target) is None  # type: ignore[arg-type]
        for kind, target in for_the_lab
    )
