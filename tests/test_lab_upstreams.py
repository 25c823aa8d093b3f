"""The lab's side of an OpenAI-compatible upstream, without starting it: llama-cpp-python's server command
line and readiness probe, the wrapper's arguments, the Docker backend's choices, the checks before `up`, and
the control API's answer for a model service the lab does not run."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest

from labkit.config import LabConfig, embedded_model_path
from labkit.errors import ConfigError
from labkit.lab.docker import CONTAINER_LAB, DockerBackend
from labkit.lab.labdir import LabDir
from labkit.lab.local import LocalBackend
from labkit.lab.manager.readiness import check_ready, served_models
from labkit.lab.manager.supervisor import Supervisor
from labkit.lab.specs import ServiceSpec, service_specs
from labkit.services.modelserver import ModelServerSettings
from tests.conftest import sim_lab_config


def _by_name(config: LabConfig, *, for_containers: bool = False) -> dict[str, ServiceSpec]:
    lab = CONTAINER_LAB if for_containers else LabDir(config.lab_dir)
    return {spec.name: spec for spec in service_specs(config, lab, for_containers=for_containers)}


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _key_file(tmp_path: Path) -> Path:
    key = tmp_path / "upstream.key"
    key.write_text("sk-upstream\n")
    key.chmod(0o600)
    return key


def test_llamacpp_server_runs_the_embedded_model_as_the_lab_s_model_service(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    cfg = sim_lab_config(tmp_path, engine="llamacpp-server", seed=7)
    model = _by_name(cfg)["model"]
    assert model.argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    assert _flag(model.argv, "--model") == str(embedded_model_path())
    assert _flag(model.argv, "--model_alias") == cfg.model_name
    assert (_flag(model.argv, "--host"), _flag(model.argv, "--port")) == ("127.0.0.1", str(cfg.model_port))
    # The same context, threads and seed as labkit's llama engine.
    defaults = ModelServerSettings()
    assert _flag(model.argv, "--n_ctx") == str(defaults.n_ctx)
    assert (
        _flag(model.argv, "--n_threads") == _flag(model.argv, "--n_threads_batch") == str(defaults.n_threads)
    )
    assert _flag(model.argv, "--seed") == "7"
    # Requests queue; a new one must not abort the stream in progress (the server's default).
    assert _flag(model.argv, "--interrupt_requests") == "False"
    # uvicorn.run there reads HOST and PORT from the environment over the flags.
    assert model.env == {"HOST": "127.0.0.1", "PORT": str(cfg.model_port)}
    assert (model.url, model.ready_path, model.model_name) == (cfg.model_url, "/v1/models", cfg.model_name)


def test_the_wrapper_speaks_openai_to_an_openai_upstream_and_ollama_otherwise(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    served = _by_name(sim_lab_config(tmp_path, engine="llamacpp-server"))["wrapper"].argv
    assert _flag(served, "--backend-api") == "openai"
    assert _flag(served, "--backend-url").endswith("/v1")
    assert "--backend-api-key-file" not in served
    own = _by_name(sim_lab_config(tmp_path))["wrapper"].argv
    assert "--backend-api" not in own and "--backend-api-key-file" not in own


def test_an_external_openai_service_is_never_started_and_gets_the_key_file(tmp_path: Path) -> None:
    key = _key_file(tmp_path)
    cfg = sim_lab_config(
        tmp_path, engine="openai", openai_url="http://127.0.0.1:8001/v1", upstream_api_key_file=key
    )
    specs = _by_name(cfg)
    assert list(specs) == ["wrapper", "alertmanager", "prometheus"]
    argv = specs["wrapper"].argv
    assert _flag(argv, "--backend-url") == "http://127.0.0.1:8001/v1"
    assert _flag(argv, "--backend-api") == "openai"
    assert _flag(argv, "--backend-api-key-file") == str(key)
    assert "sk-upstream" not in " ".join(argv)


def test_docker_copies_the_upstream_key_into_the_lab_and_mounts_it_read_only(
    engine_socket: Path, tmp_path: Path
) -> None:
    key = _key_file(tmp_path)
    cfg = sim_lab_config(
        tmp_path, engine="openai", openai_url="http://127.0.0.1:8001/v1", upstream_api_key_file=key
    )
    backend = DockerBackend(cfg, client=object())
    backend.lab.root.mkdir(parents=True)
    backend._copy_api_key()
    copy = backend.lab.upstream_api_key_copy
    assert copy.read_text().strip() == "sk-upstream" and copy.stat().st_mode & 0o777 == 0o600
    specs = backend._container_specs("0123456789abcdef0123")
    assert "model" not in specs  # nothing of the upstream runs in a container of the lab
    wrapper = specs["wrapper"]
    inside = _flag(wrapper["command"], "--backend-api-key-file")
    assert inside == str(CONTAINER_LAB.upstream_api_key_copy)
    assert wrapper["volumes"][str(copy)] == {"bind": inside, "mode": "ro"}
    assert "--external-model-url" in specs["exporter"]["command"]
    backend._mark_stopped()
    assert not copy.exists()


def test_docker_refuses_llamacpp_server_before_anything_starts(tmp_path: Path) -> None:
    backend = DockerBackend(sim_lab_config(tmp_path, engine="llamacpp-server"), client=object())
    with pytest.raises(ConfigError, match=r"local backend only.*--backend local"):
        backend._preflight()


def test_a_missing_upstream_key_file_stops_up_before_anything_starts(tmp_path: Path) -> None:
    cfg = sim_lab_config(
        tmp_path,
        engine="openai",
        openai_url="http://127.0.0.1:8001/v1",
        upstream_api_key_file=tmp_path / "missing.key",
        prometheus_bin=sys.executable,  # preflight only looks it up
    )
    backend = LocalBackend(cfg)
    with pytest.raises(ConfigError, match=r"upstream API key file .*missing\.key"):
        backend.up()
    assert not backend.is_running() and not backend.lab.state_file.exists()


def _response(body: object, path: str = "/v1/models") -> httpx.Response:
    return httpx.Response(200, json=body, request=httpx.Request("GET", f"http://127.0.0.1:1{path}"))


def test_served_models_reads_openai_and_ollama_model_lists() -> None:
    openai = {"object": "list", "data": [{"id": "smollm2:135m", "object": "model"}]}
    assert served_models(_response(openai)) == ("openai", {"smollm2:135m"})
    tags = {"models": [{"name": "smollm2:135m", "model": "smollm2:135m"}]}
    assert served_models(_response(tags, "/api/tags")) == ("ollama", {"smollm2:135m"})
    assert served_models(_response({"status": "ok"})) is None
    assert served_models(_response([1, 2])) is None


@pytest.mark.parametrize(
    ("body", "ready", "detail"),
    [
        ({"data": [{"id": "smollm2:135m"}]}, True, ""),
        ({"data": [{"id": "other"}]}, False, "model 'smollm2:135m' is not served there (it lists: other)"),
        ({"detail": "nope"}, False, "/v1/models did not return a model list"),
    ],
)
def test_an_openai_model_service_is_ready_when_v1_models_lists_the_lab_s_model(
    body: object, ready: bool, detail: str
) -> None:
    spec = ServiceSpec("model", ["x"], "http://127.0.0.1:1", "/v1/models", model_name="smollm2:135m")

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(200, json=body)

    async def probe() -> tuple[bool, str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            return await check_ready(client, spec)

    ok, why = asyncio.run(probe())
    assert ok is ready and why.startswith(detail)
    if not ready and "lists" in why:
        assert "ollama pull" not in why  # an OpenAI-compatible server has no pull


def test_the_control_api_refuses_to_act_on_a_model_service_the_lab_does_not_run(tmp_path: Path) -> None:
    cfg = sim_lab_config(tmp_path, engine="openai", openai_url="http://127.0.0.1:8001/v1")
    lab = LabDir(cfg.lab_dir)
    lab.prepare()
    token = lab.new_token()
    lab.config_file.write_text(f'{{"lab_id": "x", "config": {cfg.model_dump_json()}}}')
    supervisor = Supervisor(lab)
    assert set(supervisor.services) == {"wrapper", "alertmanager", "prometheus"}
    headers = {"Authorization": f"Bearer {token}"}

    async def ask() -> tuple[list[httpx.Response], list[dict[str, object]]]:
        transport = httpx.ASGITransport(app=supervisor.app())
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answers = [
                await client.post(f"/v1/services/model/{action}", headers=headers, json={"duration_s": 5})
                for action in ("kill", "restart", "pause")
            ]
            status = (await client.get("/v1/status", headers=headers)).json()
        return answers, status

    answers, status = asyncio.run(ask())
    for action, answer in zip(("kill", "restart", "pause"), answers, strict=True):
        assert answer.status_code == 409
        message = answer.json()["error"]
        assert f"not run by the lab, so the lab cannot {action} it" in message
        assert "http://127.0.0.1:8001/v1" in message
    model = next(s for s in status if s["name"] == "model")
    assert model["state"] == "external" and model["url"] == "http://127.0.0.1:8001/v1"
