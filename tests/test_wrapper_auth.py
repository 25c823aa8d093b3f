"""The wrapper's optional API key on POST /generate, and the load generator that sends it.

Real servers on 127.0.0.1: the model server (sim engine) and the wrapper, each stopped by its fixture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkit.config import DEFAULT_MODEL_NAME
from labkit.errors import ConfigError
from labkit.measure.load import LoadSpec, run_load
from labkit.services.modelserver import BackgroundModelServer, ModelServerSettings
from labkit.services.wrapper import WrapperSettings, create_app, main
from tests.test_wrapper import metric, serving

KEY = "s3cret-api-key-for-tests"
EP = {"endpoint": "/generate"}
BODY = {"prompt": "hi", "max_tokens": 2}


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    settings = ModelServerSettings(port=0, engine="sim", sim_ttft_s=0, sim_itl_s=0, sim_jitter=0)
    with BackgroundModelServer(settings) as server:
        yield server.url


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def keyed_wrapper(model_url: str, key_file: Path) -> Iterator[str]:
    settings = WrapperSettings(backend_url=model_url, model=DEFAULT_MODEL_NAME, api_key_file=key_file)
    with serving(create_app(settings)) as url:
        yield url


def test_without_a_key_file_generate_is_open(model_url: str) -> None:
    with serving(create_app(WrapperSettings(backend_url=model_url, model=DEFAULT_MODEL_NAME))) as url:
        assert httpx.post(url + "/generate", json=BODY, timeout=10).status_code == 200
        assert "security" not in httpx.get(url + "/openapi.json").json()["paths"]["/generate"]["post"]


def test_a_key_file_makes_generate_need_the_key(keyed_wrapper: str, caplog: pytest.LogCaptureFixture) -> None:
    url = keyed_wrapper + "/generate"
    caplog.set_level(logging.DEBUG)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json=BODY, headers=headers, timeout=10)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert "missing or wrong API key" in r.json()["error"]
    # Refused before the body is looked at: an invalid body without the key learns nothing either.
    assert httpx.post(url, json={}, timeout=10).status_code == 401
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
        r = httpx.post(url, json=BODY, headers=headers, timeout=10)
        assert r.status_code == 200, r.text
    for name in ("api_key", "API_KEY"):  # query names are matched whatever their case
        r = httpx.post(url, params={name: KEY}, json=BODY, headers={"X-API-Key": KEY}, timeout=10)
        assert r.status_code == 400 and "never put the API key in the URL" in r.json()["error"]
    # /health, /ready and /metrics stay open (Prometheus scrapes /metrics without a key).
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(keyed_wrapper + path).status_code == 200, path
    assert metric(keyed_wrapper, "llm_requests_total", status_code="401", **EP) == 5
    assert metric(keyed_wrapper, "llm_requests_total", status_code="400", **EP) == 2
    assert metric(keyed_wrapper, "llm_requests_total", status_code="200", **EP) == 2
    assert metric(keyed_wrapper, "llm_requests_rejected_total", reason="unauthorized") == 7
    # The server's logs only: the test's own httpx client logs the URLs it requests, key included.
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any("without the right API key" in m for m in server_logs)
    assert not any(KEY in m for m in server_logs)
    schemes = httpx.get(keyed_wrapper + "/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["apiKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the API key"
    }  # fmt: skip
    assert schemes["apiKeyBearer"]["scheme"] == "bearer"


def test_unreadable_key_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        create_app(WrapperSettings(api_key_file=tmp_path / "absent"))
    assert main(["--port", "0", "--api-key-file", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--api-key-file" in err


def test_the_load_generator_sends_the_key_and_records_only_its_path(
    keyed_wrapper: str, key_file: Path, tmp_path: Path
) -> None:
    spec = LoadSpec(url=keyed_wrapper, mode="closed", concurrency=1, duration_s=0.3, max_tokens=2)
    refused = run_load(spec, tmp_path / "without", progress=False)
    assert set(refused.frame["status"]) == {401}
    keyed = spec.model_copy(update={"api_key_file": key_file})
    result = run_load(keyed, tmp_path / "with", progress=False)
    assert len(result.frame) > 0 and set(result.frame["status"]) == {200}
    written = [path for path in (tmp_path / "with").rglob("*") if path.is_file()]
    assert any(path.name == "params.json" and str(key_file) in path.read_text() for path in written)
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path
