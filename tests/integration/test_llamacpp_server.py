"""`--engine llamacpp-server`: llama-cpp-python's own OpenAI-compatible server (its `server` extra, the
embedded SmolLM2 file) run by the lab as a real third-party model service.

First the server under the supervisor's restart policy by itself: ready when /v1/models lists the lab's
model, answering the official `openai` client, two streams at once both finishing (the lab turns off the
server's default of aborting a stream for every new request), killed and restarted once. Then the whole lab
(`labkit up --engine llamacpp-server`, the wrapper in front speaking OpenAI to it) and `labkit run
kill_and_recover --quick --engine llamacpp-server`: these need the wrapper's `--backend-api openai`, and are
skipped where the wrapper does not have it yet.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkit.config import LabConfig
from labkit.lab.labdir import LabDir
from labkit.lab.local import LocalBackend
from labkit.lab.manager.log_files import RotatingLog
from labkit.lab.manager.supervisor import SupervisedService
from labkit.lab.specs import service_specs
from tests.conftest import sim_lab_config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.llama]

READY_TIMEOUT_S = 90.0


def _require_server() -> None:
    for module in ("llama_cpp", "sse_starlette", "starlette_context", "openai"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (make setup: llama-cpp-python[server], openai)")


def _wrapper_speaks_openai() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "labkit.services.wrapper", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "--backend-api" in done.stdout


@pytest.fixture
def server_config(tmp_path: Path) -> LabConfig:
    _require_server()
    return sim_lab_config(tmp_path, engine="llamacpp-server", ready_timeout_s=READY_TIMEOUT_S)


async def _until(svc: SupervisedService, client: httpx.AsyncClient, *, ready: bool, restarts: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (svc.state == "ready") != ready or svc.restarts != restarts:
        assert svc.state != "failed", svc.detail
        if time.monotonic() > deadline:
            raise AssertionError(f"state {svc.state} ({svc.detail}), restarts {svc.restarts}")
        await svc.probe(client)
        await asyncio.sleep(0.25)


def _chat(base_url: str, model: str, prompt: str, results: list[tuple[str, str | None]]) -> None:
    """One streamed chat completion through the official client: its text and finish reason."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
    text, reason = "", None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=8,
        temperature=0,
        stream=True,
    ):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            reason = chunk.choices[0].finish_reason or reason
    results.append((text, reason))


def test_the_server_under_the_supervisor_is_ready_serves_and_comes_back_after_a_kill(
    server_config: LabConfig,
) -> None:
    lab = LabDir(server_config.lab_dir)
    lab.prepare()
    (spec,) = [s for s in service_specs(server_config, lab) if s.name == "model"]
    log = RotatingLog(
        lab.log_file("model"), max_bytes=server_config.log_max_bytes, files=server_config.log_files
    )
    svc = SupervisedService(spec, lab, "test-llamacpp-server", on_change=lambda: None, log=log)

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=3.0, trust_env=False) as client:
            try:
                await svc.start()
                await _until(svc, client, ready=True, restarts=0)
                # Two streams at once: both finish (the server's default would abort the first).
                results: list[tuple[str, str | None]] = []
                threads = [
                    threading.Thread(
                        target=_chat,
                        args=(server_config.model_api_url, server_config.model_name, prompt, results),
                    )
                    for prompt in ("Name a colour.", "Name an animal.")
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    await asyncio.to_thread(thread.join, 120)
                assert len(results) == 2 and all(reason in ("stop", "length") for _, reason in results)
                assert all(text.strip() for text, _ in results), results
                # It has no Prometheus endpoint: the lab scrapes nothing of it (and says so in reports).
                metrics = await client.get(f"{server_config.model_url}/metrics")
                assert metrics.status_code == 404
                first = svc.pid
                svc.kill()  # SIGKILL, as a crash: the restart policy brings it back, counted once
                await _until(svc, client, ready=True, restarts=1)
                assert svc.pid is not None and svc.pid != first
                models = (await client.get(f"{server_config.model_api_url}/models")).json()
                assert [m["id"] for m in models["data"]] == [server_config.model_name]
            finally:
                await svc.stop()

    asyncio.run(scenario())
    assert svc.state == "stopped" and svc.pid is None
    assert "Uvicorn running" in lab.log_file("model").read_text()


@pytest.fixture
def llamacpp_lab(server_config: LabConfig) -> Iterator[LocalBackend]:
    if not _wrapper_speaks_openai():
        pytest.skip("the wrapper has no --backend-api yet (issue 17, the wrapper's OpenAI upstream)")
    backend = LocalBackend(server_config)
    try:
        backend.up(wait_scraped=True)
        yield backend
    finally:
        backend.down()


def _prometheus_value(url: str, query: str) -> float | None:
    result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=3).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_labkit_up_runs_llamacpp_server_behind_the_wrapper(llamacpp_lab: LocalBackend) -> None:
    cfg = llamacpp_lab.config
    services = {s.name: s for s in llamacpp_lab.status()}
    assert all(s.state == "ready" for s in services.values()), services
    assert services["model"].url == cfg.model_url and services["model"].pid is not None
    answer = httpx.post(
        f"{cfg.wrapper_url}/generate",
        json={"prompt": "What colour is the sky? One word.", "max_tokens": 8, "options": {"temperature": 0}},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["output_tokens"] > 0
    # Prometheus scrapes the lab's own services and no job of the server (it has no /metrics).
    targets = httpx.get(f"{cfg.prometheus_url}/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
    assert {t["labels"]["job"] for t in targets} == {"wrapper", "exporter", "prometheus", "alertmanager"}
    llamacpp_lab.kill("model")
    wait_for(
        lambda: next(s for s in llamacpp_lab.status() if s.name == "model").restarts == 1,
        READY_TIMEOUT_S,
        "the model server's restart",
    )
    wait_for(
        lambda: _prometheus_value(cfg.prometheus_url, 'lab_service_restarts_total{service="model"}') == 1,
        30,
        "Prometheus to count the restart",
    )


def test_kill_and_recover_runs_on_the_real_llamacpp_server(server_config: LabConfig, tmp_path: Path) -> None:
    """The issue's "done when": a report with the kill, restart count 1 and the recovery."""
    if not _wrapper_speaks_openai():
        pytest.skip("the wrapper has no --backend-api yet (issue 17, the wrapper's OpenAI upstream)")
    from labkit.report import RunData, restarts_figure

    runs = tmp_path / "reports" / "runs"
    ports = {"LABKIT_" + k.upper(): str(getattr(server_config, k)) for k in
             ("model_port", "wrapper_port", "prometheus_port", "exporter_port",
              "alertmanager_port")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "labkit.cli", "--lab-dir", str(server_config.lab_dir), "run",
         "kill_and_recover", "--quick", "--engine", "llamacpp-server", "--out", str(runs), "--no-progress"],
        capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, **ports, "LABKIT_READY_TIMEOUT_S": str(READY_TIMEOUT_S)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    assert (run_dir / "report.html").is_file()
    run = RunData.load(run_dir)
    assert run.status == "completed" and run.lab["engine"] == "llamacpp-server"
    assert run.lab["model_api"] == "openai" and run.lab["upstream_url"] == server_config.model_api_url
    assert [f.kind for f in run.fault_windows] == ["kill"]
    model_line = next(
        line for line in restarts_figure(run).axes[0].get_lines() if line.get_label() == "model"
    )
    assert max(model_line.get_ydata()) == 1  # type: ignore[type-var]
    (recovery,) = run.recovery.to_dict("records")
    assert (recovery["kind"], recovery["target"]) == ("kill", "model")
    assert not recovery["detected"] or recovery["recovered"], recovery  # what failed came back
    assert (
        "the upstream exposes no metrics (llama-cpp-python's server has no /metrics)"
        in (run_dir / "report.html").read_text()
    )


def test_an_external_openai_service_is_attached_never_signalled(
    server_config: LabConfig, tmp_path: Path
) -> None:
    """`labkit up --openai-url`: llama-cpp-python's server started by someone else (here, this test) is used
    through the wrapper; the lab refuses to kill it, a chaos run that would is stopped before it starts, and
    `labkit down` leaves it running."""
    if not _wrapper_speaks_openai():
        pytest.skip("the wrapper has no --backend-api yet (issue 17, the wrapper's OpenAI upstream)")
    from labkit.chaos import ExperimentSpec, run_experiment
    from labkit.errors import BackendError, ConfigError

    lab = LabDir(tmp_path / "external")
    lab.prepare()
    (spec,) = [s for s in service_specs(server_config, lab) if s.name == "model"]
    external = subprocess.Popen(
        spec.argv,
        env={**os.environ, **spec.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: httpx.get(f"{server_config.model_api_url}/models", timeout=2).status_code == 200,
            READY_TIMEOUT_S,
            "the external server",
        )
        cfg = server_config.model_copy(update={"engine": "openai", "openai_url": server_config.model_api_url})
        backend = LocalBackend(cfg)
        try:
            services = {s.name: s for s in backend.up()}
            assert services["model"].state == "external" and services["model"].pid is None
            assert services["model"].url == server_config.model_api_url
            answer = httpx.post(
                f"{cfg.wrapper_url}/generate", json={"prompt": "Hi", "max_tokens": 4}, timeout=120
            )
            assert answer.status_code == 200, answer.text
            with pytest.raises(BackendError, match="not run by the lab, so the lab cannot kill it"):
                backend.kill("model")
            kill_model = ExperimentSpec(
                schedule=[{"kind": "kill", "target": "model", "start_s": 1, "duration_s": 2}], duration_s=5
            )
            with pytest.raises(ConfigError, match="which the lab does not run, so it cannot kill it"):
                run_experiment(cfg.lab_dir, kill_model, out_dir=tmp_path / "runs", say=None)
            assert not (tmp_path / "runs").exists()  # refused before a run directory was made
        finally:
            backend.down()
        assert external.poll() is None  # still running: the lab never signalled it
    finally:
        external.terminate()
        external.wait(timeout=30)
