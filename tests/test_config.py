from __future__ import annotations

from pathlib import Path

import pytest

from labkit.config import LabConfig, embedded_model_path, load_config, stack_dir
from labkit.errors import ConfigError, ModelNotFoundError


def test_defaults_bind_loopback_on_the_documented_ports(tmp_path: Path) -> None:
    cfg = load_config(lab_dir=tmp_path)
    assert cfg.host == "127.0.0.1"
    assert (cfg.model_port, cfg.wrapper_port, cfg.prometheus_port) == (11434, 8000, 9090)
    assert cfg.engine == "llama"
    assert cfg.model_url == "http://127.0.0.1:11434"


def test_environment_variables_set_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABKIT_WRAPPER_PORT", "18000")
    monkeypatch.setenv("LABKIT_ENGINE", "sim")
    cfg = load_config(lab_dir=tmp_path)
    assert cfg.wrapper_port == 18000
    assert cfg.engine == "sim"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABKIT_WRAPPER_PORT", "18000")
    assert load_config(lab_dir=tmp_path, wrapper_port=18001).wrapper_port == 18001


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"wrapper_port": 0}, "wrapper_port"),
        ({"wrapper_port": 70000}, "wrapper_port"),
        ({"engine": "gpt"}, "engine"),
        ({"wrapper_port": 9090}, "ports must differ"),
        ({"ollama_url": "localhost:11434", "engine": "ollama"}, "ollama_url"),
        ({"ollama_url": "http://127.0.0.1:1"}, "needs engine 'ollama'"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_configuration_is_one_clear_error(
    overrides: dict[str, object], needle: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="invalid lab configuration") as info:
        load_config(lab_dir=tmp_path, **overrides)
    assert needle in str(info.value)


def test_external_ollama_is_not_supervised(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path, engine="ollama", ollama_url="http://127.0.0.1:11500/")
    assert not cfg.supervised_model
    assert cfg.model_url == "http://127.0.0.1:11500"


def test_missing_model_file_says_what_to_do(tmp_path: Path) -> None:
    cfg = LabConfig(lab_dir=tmp_path, model_path=tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFoundError, match="--model-path"):
        cfg.resolved_model_path()


def test_embedded_model_ships_in_the_wheel() -> None:
    pytest.importorskip("llama_cpp")
    path = embedded_model_path()
    assert path.name.endswith(".gguf")
    assert path.stat().st_size > 50_000_000


def test_stack_dir_has_the_prometheus_template() -> None:
    assert (stack_dir() / "prometheus" / "prometheus.yml.j2").is_file()


def test_a_relative_api_key_file_is_saved_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's config is read later from other working directories (notebooks/, containers)."""
    monkeypatch.chdir(tmp_path)
    config = LabConfig(lab_dir=tmp_path / "lab", api_key_file=Path("key"))
    assert config.api_key_file == tmp_path / "key"
    assert LabConfig(lab_dir=tmp_path / "lab", api_key_file=Path("~/key")).api_key_file == Path.home() / "key"
