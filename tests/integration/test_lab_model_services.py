"""The lab with each kind of model service: the embedded SmolLM2 (the default), an Ollama that
someone else runs (`--ollama-url`), and the `ollama` binary on PATH (`--engine ollama`)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from labkit.config import LabConfig
from labkit.errors import ConfigError, ModelNotFoundError
from labkit.lab.contract import SERVICE_NAMES
from labkit.lab.local import LocalBackend
from labkit.services.modelserver import BackgroundModelServer, ModelServerSettings
from tests.conftest import promtool_check_metrics

pytestmark = pytest.mark.integration


def _require_llama() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make setup)")


@pytest.mark.llama
def test_default_engine_serves_real_smollm2_text(lab_config: LabConfig) -> None:
    _require_llama()
    backend = LocalBackend(lab_config.model_copy(update={"engine": "llama"}))
    try:
        services = backend.up()
        assert [s.state for s in services] == ["ready"] * len(SERVICE_NAMES)
        r = httpx.post(
            f"http://127.0.0.1:{lab_config.wrapper_port}/generate",
            json={
                "prompt": "What colour is the sky on a clear day? Answer in one word.",
                "max_tokens": 16,
                "options": {"temperature": 0},
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0 < body["output_tokens"] <= 16
        assert body["prompt_tokens"] > 5  # the chat template around the prompt, counted by the real tokenizer
        # Real language, not the sim engine's word salad: SmolLM2 answers the question.
        assert "blue" in body["response"].lower(), body["response"]
        tags = httpx.get(f"http://127.0.0.1:{lab_config.model_port}/api/tags").json()
        assert tags["models"][0]["details"]["quantization_level"] == "Q4_1"
    finally:
        backend.down()


def test_every_live_metrics_endpoint_passes_promtool(running_lab: LocalBackend) -> None:
    cfg = running_lab.config
    httpx.post(
        f"http://127.0.0.1:{cfg.wrapper_port}/generate", json={"prompt": "hi", "max_tokens": 4}, timeout=30
    )
    for port in (cfg.wrapper_port, cfg.model_port, cfg.exporter_port):
        body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        result = promtool_check_metrics(body)
        assert result.returncode == 0 and not result.stdout and not result.stderr, (port, result.stdout)


def test_an_ollama_run_by_someone_else_is_used_not_supervised(lab_config: LabConfig) -> None:
    settings = ModelServerSettings(port=0, engine="sim", sim_ttft_s=0.005, sim_itl_s=0.001)
    with BackgroundModelServer(settings) as external:
        cfg = lab_config.model_copy(update={"engine": "ollama", "ollama_url": external.url})
        backend = LocalBackend(cfg)
        try:
            services = {s.name: s for s in backend.up()}
            assert services["model"].state == "external"
            assert services["model"].pid is None and services["model"].restarts is None
            assert services["model"].url == external.url
            r = httpx.post(
                f"http://127.0.0.1:{cfg.wrapper_port}/generate",
                json={"prompt": "hi", "max_tokens": 3},
                timeout=30,
            )
            assert r.status_code == 200 and r.json()["output_tokens"] == 3
        finally:
            backend.down()
        # The external server was left alone.
        assert httpx.get(external.url + "/").text == "Ollama is running"


def test_ollama_binary_on_path_is_started_as_ollama_serve(
    lab_config: LabConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No real Ollama can be installed here (no registry, no model download). This stand-in `ollama`
    # speaks the same API and, like the real binary, reads OLLAMA_HOST and takes `serve`: it proves
    # the lab starts `ollama serve` with the environment a real Ollama needs.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "ollama"
    shim.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "assert sys.argv[1:] == ['serve'], sys.argv\n"
        "host, port = os.environ['OLLAMA_HOST'].rsplit(':', 1)\n"
        "assert os.environ['OLLAMA_NUM_PARALLEL'] and os.environ['OLLAMA_MAX_QUEUE']\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'labkit.services.modelserver', '--engine', 'sim',\n"
        "         '--host', host, '--port', port, '--sim-ttft-s', '0.005', '--sim-itl-s', '0.001'])\n"
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    backend = LocalBackend(lab_config.model_copy(update={"engine": "ollama"}))
    try:
        services = {s.name: s for s in backend.up()}
        assert services["model"].state == "ready" and services["model"].pid is not None
        r = httpx.post(
            f"http://127.0.0.1:{lab_config.wrapper_port}/generate",
            json={"prompt": "hi", "max_tokens": 3},
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        backend.down()


def test_engine_ollama_without_binary_or_url_says_what_to_do(
    lab_config: LabConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    prometheus = shutil.which(lab_config.prometheus_bin) or "/usr/bin/prometheus"
    alertmanager = lab_config.alertmanager_binary()  # found before PATH goes
    monkeypatch.setenv("PATH", "/nonexistent")
    cfg = lab_config.model_copy(
        update={"engine": "ollama", "prometheus_bin": prometheus, "alertmanager_bin": alertmanager}
    )
    with pytest.raises(ConfigError, match="--ollama-url"):
        LocalBackend(cfg).up()


def test_missing_model_file_is_refused_before_anything_starts(lab_config: LabConfig, tmp_path: Path) -> None:
    cfg = lab_config.model_copy(update={"engine": "llama", "model_path": tmp_path / "missing.gguf"})
    backend = LocalBackend(cfg)
    with pytest.raises(ModelNotFoundError, match=r"missing\.gguf"):
        backend.up()
    assert not backend.is_running()
