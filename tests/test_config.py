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


# ---- OpenAI-compatible upstreams: llama-cpp-python's server, an external service -------------------------


def test_an_openai_url_implies_engine_openai_from_a_flag_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(lab_dir=tmp_path, openai_url="http://127.0.0.1:8001/v1/")
    assert (cfg.engine, cfg.model_api, cfg.openai_url) == ("openai", "openai", "http://127.0.0.1:8001/v1")
    assert cfg.model_url == cfg.model_api_url == "http://127.0.0.1:8001/v1"
    assert not cfg.supervised_model and cfg.upstream_metrics is None
    monkeypatch.setenv("LABKIT_OPENAI_URL", "http://localhost:30000/v1")
    monkeypatch.setenv("LABKIT_UPSTREAM_METRICS_URL", "http://localhost:30000/metrics")
    from_env = load_config(lab_dir=tmp_path)
    assert from_env.engine == "openai" and from_env.model_api_url == "http://localhost:30000/v1"
    assert from_env.upstream_metrics == "http://localhost:30000/metrics"


def test_llamacpp_server_is_run_by_the_lab_and_spoken_to_in_openai(tmp_path: Path) -> None:
    cfg = load_config(lab_dir=tmp_path, engine="llamacpp-server", model_port=18080)
    assert cfg.supervised_model and cfg.model_api == "openai"
    assert cfg.model_url == "http://127.0.0.1:18080"
    assert cfg.model_api_url == "http://127.0.0.1:18080/v1"
    # llama-cpp-python 0.3.36's server has no /metrics: nothing is scraped unless a URL is given.
    assert cfg.upstream_metrics is None
    given = load_config(lab_dir=tmp_path, engine="llamacpp-server", upstream_metrics_url="http://[::1]:9/m")
    assert given.upstream_metrics == "http://[::1]:9/m"


@pytest.mark.parametrize("engine", ["llama", "sim", "ollama"])
def test_the_other_engines_speak_ollama_s_api(tmp_path: Path, engine: str) -> None:
    cfg = load_config(lab_dir=tmp_path, engine=engine)
    assert cfg.model_api == "ollama" and cfg.model_api_url == cfg.model_url


def test_upstream_metrics_none_disables_the_scrape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABKIT_UPSTREAM_METRICS_URL", "http://127.0.0.1:8001/metrics")
    cfg = load_config(lab_dir=tmp_path, openai_url="http://127.0.0.1:8001/v1", upstream_metrics_url="None")
    assert cfg.upstream_metrics_url == "none" and cfg.upstream_metrics is None


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"openai_url": "http://127.0.0.1:8001"}, "ending /v1"),
        ({"openai_url": "127.0.0.1:8001/v1"}, "http:// or https://"),
        ({"openai_url": "http://127.0.0.1:8001/v1?x=1"}, "ending /v1"),
        ({"engine": "openai"}, "needs --openai-url"),
        ({"engine": "sim", "openai_url": "http://127.0.0.1:8001/v1"}, "needs engine 'openai'"),
        ({"openai_url": "http://10.1.2.3:8000/v1"}, "--allow-non-loopback"),
        ({"openai_url": "https://api.example.com/v1"}, "not on this machine"),
        (
            {"openai_url": "http://127.0.0.1:8001/v1", "upstream_metrics_url": "http://192.168.1.9/metrics"},
            "--upstream-metrics-url http://192.168.1.9/metrics is not on this machine",
        ),
        ({"engine": "llamacpp-server", "upstream_api_key_file": "key"}, "give it with --openai-url"),
        ({"engine": "sim", "upstream_metrics_url": "http://127.0.0.1:1/metrics"}, "scraped as job model"),
        ({"engine": "ollama", "upstream_metrics_url": "ftp://x/metrics"}, "upstream_metrics_url"),
        ({"engine": "ollama", "upstream_metrics_url": "http://127.0.0.1:1/m?a=1"}, "without a query"),
    ],
)
def test_bad_upstream_settings_are_one_clear_error(
    overrides: dict[str, object], needle: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="invalid lab configuration") as info:
        load_config(lab_dir=tmp_path, **overrides)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_remote_upstream_is_allowed_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(lab_dir=tmp_path, openai_url="https://api.example.com/v1", allow_non_loopback=True)
    assert cfg.model_api_url == "https://api.example.com/v1"
    monkeypatch.setenv("LABKIT_ALLOW_NON_LOOPBACK", "1")
    assert load_config(lab_dir=tmp_path, openai_url="http://10.1.2.3:8000/v1").engine == "openai"


def test_the_upstream_key_is_read_when_asked_and_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    key = tmp_path / "upstream.key"
    cfg = load_config(lab_dir=tmp_path, openai_url="http://127.0.0.1:8001/v1", upstream_api_key_file=key)
    assert cfg.upstream_api_key_file == key
    with pytest.raises(ConfigError, match=r"cannot read the upstream API key file .*--upstream-api-key-file"):
        cfg.upstream_auth_headers()
    key.write_text("sk-local\n")
    key.chmod(0o600)
    assert cfg.upstream_auth_headers() == {"Authorization": "Bearer sk-local"}
    assert "sk-local" not in cfg.model_dump_json()  # the saved config holds the path, never the key
    assert LabConfig(lab_dir=tmp_path).upstream_auth_headers() == {}
