"""Tests of the wrapper's fault-injection admin API (/admin/faults): auth, validation, each fault's effect on
/generate, the TTL held by the wrapper, and the fault metrics.

The fake Ollama backend and the thread server come from tests/test_wrapper.py; every server binds
127.0.0.1 on an ephemeral port and is stopped in a fixture's `finally`. Timings are only lower bounds.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI

from labkit.errors import ConfigError
from labkit.faults import WRAPPER_FAULT_KINDS as FAULT_KINDS
from labkit.faults import ErrorFault, ErrorParams, Fault, LatencyFault, LatencyParams
from labkit.services.wrapper import WrapperSettings, create_app, main
from tests.conftest import free_port, promtool_check_metrics
from tests.test_wrapper import EP, GEN, MODEL, FakeOllama, metric, post, serving, wait_until

TOKEN = "lab-token-3f9a1c"  # a fake secret: the tests look for it in logs and answers
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAULTS = "/admin/faults"

Fake = tuple[FakeOllama, str]


@dataclass
class Wrapper:
    """A running wrapper app: its URL, and the app itself to read its registry without HTTP."""

    url: str
    app: FastAPI

    def admin(self, method: str, path: str = "", **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", AUTH)
        return httpx.request(method, self.url + FAULTS + path, timeout=5, **kwargs)

    def inject(self, kind: str, duration_s: float = 60, **params: Any) -> dict[str, Any]:
        r = self.admin("POST", json={"kind": kind, "duration_s": duration_s, "params": params})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def active(self) -> list[dict[str, Any]]:
        r = self.admin("GET")
        assert r.status_code == 200, r.text
        return list(r.json()["faults"])

    def sample(self, name: str, **labels: str) -> float | None:
        """A metric straight from the app's registry: no request reaches the wrapper."""
        value = self.app.state.wrapper.metrics.registry.get_sample_value(name, labels)
        return None if value is None else float(value)


class Starter(Protocol):
    def __call__(self, *, admin: bool = True, **overrides: Any) -> Wrapper: ...


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    backend = FakeOllama()
    with serving(backend.app) as url:
        yield backend, url


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def start_wrapper(fake: Fake, token_file: Path) -> Iterator[Starter]:
    """Start a fresh wrapper (fresh metrics, no faults) with the admin API on unless `admin=False`."""
    with ExitStack() as stack:

        def start(*, admin: bool = True, **overrides: Any) -> Wrapper:
            settings = WrapperSettings(
                backend_url=fake[1],
                model=MODEL,
                admin_token_file=token_file if admin else None,
                **overrides,
            )
            app = create_app(settings)
            return Wrapper(stack.enter_context(serving(app)), app)

        yield start


# ---------------------------------------------------------------------------- token and auth


def test_admin_api_is_disabled_without_a_token_file(start_wrapper: Starter) -> None:
    w = start_wrapper(admin=False)
    for method in ("GET", "POST", "DELETE"):
        r = w.admin(method, json={"kind": "latency", "duration_s": 1, "params": {"delay_s": 1}})
        assert r.status_code == 403, (method, r.text)
        assert r.json()["error"].startswith("the admin API is disabled")
        assert "--admin-token-file" in r.json()["error"]
    assert w.admin("DELETE", "/abc").status_code == 403
    assert post(w.url, {"prompt": "hi", "max_tokens": 1}).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
def test_missing_or_wrong_token_is_401(start_wrapper: Starter, headers: dict[str, str]) -> None:
    w = start_wrapper()
    for method, path in (("GET", ""), ("POST", ""), ("DELETE", ""), ("DELETE", "/abc")):
        # A body that would fail validation: the token is checked first, so nothing else leaks.
        r = w.admin(method, path, headers=headers, content=b"{not json")
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer <token>" in r.json()["error"]
    assert w.active() == []  # the right token works


def test_token_in_the_url_is_refused_and_never_logged(
    start_wrapper: Starter, caplog: pytest.LogCaptureFixture
) -> None:
    w = start_wrapper()
    caplog.set_level(logging.DEBUG)
    for headers in ({}, AUTH):  # refused even alongside the right header
        for name in ("token", "access_token"):
            r = w.admin("GET", params={name: TOKEN}, headers=headers)
            assert r.status_code == 400
            assert "never put the admin token in the URL" in r.json()["error"]
            assert "Authorization: Bearer <token>" in r.json()["error"]
            assert TOKEN not in r.text
    # A whole admin session: every action is logged at INFO with kind, params and duration; never the token.
    fault = w.inject("latency", 30, delay_s=0.5)
    assert w.admin("DELETE", f"/{fault['id']}").status_code == 200
    w.inject("error", 30, probability=1)
    assert w.admin("DELETE").status_code == 200
    assert w.admin("GET", headers={"Authorization": "Bearer nope"}).status_code == 401
    # The server's logs only: the test's own httpx client logs the URLs it requests, token included.
    server = [
        r for r in caplog.records if r.name.split(".")[0] in ("labkit", "uvicorn", "fastapi", "starlette")
    ]
    assert server and not any(TOKEN in r.getMessage() for r in server)
    infos = [r.getMessage() for r in server if r.levelno == logging.INFO and "fault" in r.getMessage()]
    assert any(
        f"fault {fault['id']} injected: kind=latency" in m and "'delay_s': 0.5" in m and "duration_s=30" in m
        for m in infos
    ), infos
    assert any(f"fault {fault['id']} ended (deleted): kind=latency" in m for m in infos), infos
    assert any("ended (deleted_all): kind=error" in m and "'probability': 1.0" in m for m in infos), infos


def test_unreadable_or_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the admin token file .*absent"):
        create_app(WrapperSettings(admin_token_file=tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is empty"):
        create_app(WrapperSettings(admin_token_file=empty))


def test_cli_with_a_missing_token_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", "0", "--admin-token-file", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read the admin token file" in err and "absent" in err


def test_cli_reads_the_token_file_and_logs_admin_actions(fake: Fake, token_file: Path) -> None:
    port = free_port()
    flags = [
        "--port",
        str(port),
        "--backend-url",
        fake[1],
        "--model",
        MODEL,
        "--admin-token-file",
        str(token_file),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit.services.wrapper", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=15)
        body = {"kind": "stream_cut", "duration_s": 20, "params": {"after_tokens": 3}}
        r = httpx.post(url + FAULTS, json=body, headers=AUTH, timeout=5)
        assert r.status_code == 201, r.text
        assert httpx.post(url + FAULTS, json=body, timeout=5).status_code == 401
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        log = err.decode()
        assert f"fault {r.json()['id']} injected: kind=stream_cut params={{'after_tokens': 3}}" in log
        assert "duration_s=20" in log
        assert "ended (shutdown)" in log  # faults die with the process
        assert "refused" in log and TOKEN not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "slow", "duration_s": 1, "params": {}}, "kind: unknown fault kind 'slow'"),
        ({"duration_s": 1, "params": {"delay_s": 1}}, "kind: Field required"),
        ({"kind": "latency", "params": {"delay_s": 1}}, "duration_s: Field required"),
        (
            {"kind": "latency", "duration_s": 0, "params": {"delay_s": 1}},
            "duration_s: Input should be greater",
        ),
        (
            {"kind": "latency", "duration_s": 3601, "params": {"delay_s": 1}},
            "duration_s: Input should be less",
        ),
        (
            {"kind": "latency", "duration_s": "9", "params": {"delay_s": 1}},
            "duration_s: Input should be a valid",
        ),
        (
            {"kind": "latency", "duration_s": True, "params": {"delay_s": 1}},
            "duration_s: Input should be a valid",
        ),
        ({"kind": "latency", "duration_s": 1}, "params: Field required"),
        ({"kind": "latency", "duration_s": 1, "params": {"delay_s": 1}, "x": 1}, "x: Extra inputs"),
        (
            {"kind": "latency", "duration_s": 1, "params": {"delay_s": 0}},
            "params.delay_s: Input should be greater",
        ),
        (
            {"kind": "latency", "duration_s": 1, "params": {"delay_s": 61}},
            "params.delay_s: Input should be less",
        ),
        ({"kind": "latency", "duration_s": 1, "params": {"delay_s": 1, "jitter_s": -1}}, "params.jitter_s: "),
        (
            {"kind": "latency", "duration_s": 1, "params": {"delay_s": 1, "probability": 1}},
            "params.probability: ",
        ),
        (
            {"kind": "error", "duration_s": 1, "params": {"probability": 0}},
            "params.probability: Input should be",
        ),
        (
            {"kind": "error", "duration_s": 1, "params": {"probability": 1.5}},
            "params.probability: Input should be",
        ),
        ({"kind": "error", "duration_s": 1, "params": {"probability": 1, "status": 501}}, "params.status: "),
        ({"kind": "error", "duration_s": 1, "params": {"probability": 1, "seed": "7"}}, "params.seed: "),
        (
            {"kind": "stream_cut", "duration_s": 1, "params": {"after_tokens": 0}},
            "params.after_tokens: Input",
        ),
        (
            {"kind": "stream_cut", "duration_s": 1, "params": {"after_tokens": 1.5}},
            "params.after_tokens: Input",
        ),
        (
            {"kind": "stream_cut", "duration_s": 1, "params": {"after": 2}},
            "params.after: Extra inputs",
        ),
        (
            # the bound of the lab's fault contract (labkit.faults): the same as a chaos schedule's
            {"kind": "stream_cut", "duration_s": 1, "params": {"after_tokens": 100_001}},
            "params.after_tokens: Input should be less than or equal to 100000",
        ),
        (["latency"], "body: must be a JSON object"),
    ],
)
def test_invalid_faults_are_422_naming_the_field(start_wrapper: Starter, body: Any, message: str) -> None:
    w = start_wrapper()
    r = w.admin("POST", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(message), r.json()
    assert isinstance(r.json()["detail"], list)
    assert w.active() == []


def test_malformed_json_is_422(start_wrapper: Starter) -> None:
    w = start_wrapper()
    r = w.admin("POST", content=b'{"kind": ', headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("body: invalid JSON at character 9")


def test_fault_models_match_the_metric_kinds() -> None:
    assert set(FAULT_KINDS) == {"latency", "error", "stream_cut"}
    # The public models build the same body the API takes.
    body = LatencyFault(duration_s=5, params=LatencyParams(delay_s=0.2)).model_dump()
    assert body == {"duration_s": 5.0, "kind": "latency", "params": {"delay_s": 0.2, "jitter_s": 0.0}}
    assert ErrorFault(duration_s=1, params=ErrorParams(probability=0.5)).params.status == 503


def test_parameters_left_out_get_the_contract_s_defaults_as_in_a_chaos_schedule(
    start_wrapper: Starter,
) -> None:
    w = start_wrapper()
    r = w.admin("POST", json={"kind": "latency", "duration_s": 5, "params": {}})
    assert r.status_code == 201, r.text
    assert (
        r.json()["params"] == Fault(kind="latency", duration_s=5).params == {"delay_s": 0.5, "jitter_s": 0.0}
    )


# ---------------------------------------------------------------------------- lifecycle


def test_inject_list_end_one_and_end_all(start_wrapper: Starter) -> None:
    w = start_wrapper()
    latency = w.inject("latency", 120, delay_s=0.1)
    assert set(latency) == {
        "id", "kind", "params", "started_at", "expires_at", "duration_s", "remaining_s", "replaced"
    }  # fmt: skip
    assert latency["kind"] == "latency" and latency["replaced"] is None
    assert latency["params"] == {"delay_s": 0.1, "jitter_s": 0.0}
    assert latency["expires_at"] == pytest.approx(latency["started_at"] + 120)
    error = w.inject("error", 120, probability=0.25)
    assert error["params"] == {"probability": 0.25, "status": 503, "seed": None}
    active = w.active()
    assert [f["id"] for f in active] == [latency["id"], error["id"]]
    assert all(0 < f["remaining_s"] <= 120 for f in active)
    assert (w.sample("llm_faults_active", kind="latency"), w.sample("llm_faults_active", kind="error")) == (
        1,
        1,
    )
    assert w.sample("llm_faults_active", kind="stream_cut") == 0

    r = w.admin("DELETE", f"/{latency['id']}")
    assert r.status_code == 200 and r.json() == {"ended": 1, "ids": [latency["id"]]}
    assert w.sample("llm_faults_active", kind="latency") == 0
    r = w.admin("DELETE", f"/{latency['id']}")
    assert r.status_code == 404 and r.json()["error"].startswith(f"no active fault with id '{latency['id']}'")
    assert [f["id"] for f in w.active()] == [error["id"]]

    cut = w.inject("stream_cut", 120, after_tokens=2)
    r = w.admin("DELETE")
    assert r.status_code == 200 and r.json() == {"ended": 2, "ids": [error["id"], cut["id"]]}
    assert w.admin("DELETE").json() == {"ended": 0, "ids": []}  # idempotent
    assert w.active() == []
    for kind in FAULT_KINDS:
        assert metric(w.url, "llm_faults_active", kind=kind) == 0
        assert metric(w.url, "llm_faults_injected_total", kind=kind) == 0  # no request was affected


def test_a_second_fault_of_a_kind_replaces_the_first(start_wrapper: Starter) -> None:
    w = start_wrapper()
    first = w.inject("latency", 60, delay_s=1)
    second = w.inject("latency", 30, delay_s=0.2)
    assert second["replaced"] == first["id"]
    assert [(f["id"], f["params"]["delay_s"]) for f in w.active()] == [(second["id"], 0.2)]
    assert w.sample("llm_faults_active", kind="latency") == 1
    assert w.admin("DELETE", f"/{first['id']}").status_code == 404


def test_ttl_ends_faults_without_any_request(start_wrapper: Starter) -> None:
    w = start_wrapper()
    for kind, params in (
        ("latency", {"delay_s": 5}),
        ("error", {"probability": 1}),
        ("stream_cut", {"after_tokens": 1}),
    ):
        w.inject(kind, 0.4, **params)
    assert all(w.sample("llm_faults_active", kind=kind) == 1 for kind in FAULT_KINDS)
    # Read from the registry directly: nothing but the wrapper's own timer can end the faults here.
    wait_until(
        lambda: all(w.sample("llm_faults_active", kind=kind) == 0 for kind in FAULT_KINDS), timeout_s=5
    )
    assert w.active() == []
    r = post(w.url, {"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["output_tokens"] == 2
    assert all(metric(w.url, "llm_faults_injected_total", kind=kind) == 0 for kind in FAULT_KINDS)


def test_faults_die_with_the_app(fake: Fake, token_file: Path) -> None:
    app = create_app(WrapperSettings(backend_url=fake[1], model=MODEL, admin_token_file=token_file))
    with serving(app) as url:
        w = Wrapper(url, app)
        w.inject("latency", 600, delay_s=5)
        assert w.sample("llm_faults_active", kind="latency") == 1
    assert w.sample("llm_faults_active", kind="latency") == 0
    # A restarted wrapper is a new app: it starts with no faults.
    restarted = create_app(WrapperSettings(backend_url=fake[1], model=MODEL, admin_token_file=token_file))
    with serving(restarted) as url:
        assert Wrapper(url, restarted).active() == []


# ---------------------------------------------------------------------------- effects on /generate


def test_latency_fault_delays_the_backend_call(start_wrapper: Starter) -> None:
    w = start_wrapper()
    w.inject("latency", 60, delay_s=0.3, jitter_s=0.05)
    r = post(w.url, {"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200
    assert r.elapsed.total_seconds() >= 0.3
    assert r.json()["time_to_first_token_seconds"] >= 0.3  # the delay is inside the timed request
    r = post(w.url, {"prompt": "hi", "max_tokens": 2, "stream": True})
    final = json.loads(r.text.splitlines()[-1])
    assert r.status_code == 200 and final["done"] is True and final["time_to_first_token_seconds"] >= 0.3
    assert metric(w.url, "llm_faults_injected_total", kind="latency") == 2
    assert metric(w.url, "llm_requests_total", status_code="200", **EP) == 2
    assert metric(w.url, "llm_requests_in_flight") == 0


@pytest.mark.parametrize("stream", [False, True])
def test_error_fault_answers_its_status_without_calling_the_backend(
    fake: Fake, start_wrapper: Starter, stream: bool
) -> None:
    w = start_wrapper()
    fault = w.inject("error", 60, probability=1, status=504)
    tag = f"err-{stream}"
    r = post(w.url, {"prompt": "hi", "stream": stream, "options": {"fake_id": tag}})
    assert r.status_code == 504
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": f"injected fault: error (fault {fault['id']}, probability 1); "
        "answered 504 without calling the model backend"
    }
    assert tag not in fake[0].payloads
    w.inject("error", 60, probability=1)  # replaces it; the default status is 503
    assert post(w.url, {"prompt": "hi", "stream": stream}).status_code == 503
    assert metric(w.url, "llm_requests_total", status_code="504", **EP) == 1
    assert metric(w.url, "llm_requests_total", status_code="503", **EP) == 1
    assert metric(w.url, "llm_faults_injected_total", kind="error") == 2
    assert metric(w.url, "llm_backend_errors_total", kind="http_5xx") == 0  # the backend did not fail
    assert metric(w.url, "llm_requests_rejected_total", reason="in_flight_limit") == 0
    assert metric(w.url, "llm_requests_in_flight") == 0


def test_seeded_error_probability_gives_a_reproducible_sequence(start_wrapper: Starter) -> None:
    w = start_wrapper()
    n, seed, p = 12, 7, 0.5
    draws = random.Random(seed)
    expected = [502 if draws.random() < p else 200 for _ in range(n)]
    assert 0 < expected.count(502) < n  # the seed gives a mix, so the test can tell
    runs = []
    for _ in range(2):
        w.inject("error", 60, probability=p, status=502, seed=seed)  # a fresh fault: a fresh seeded RNG
        runs.append([post(w.url, {"prompt": "hi", "max_tokens": 1}).status_code for _ in range(n)])
    assert runs == [expected, expected]
    assert metric(w.url, "llm_faults_injected_total", kind="error") == 2 * expected.count(502)
    assert metric(w.url, "llm_requests_total", status_code="502", **EP) == 2 * expected.count(502)


def test_stream_cut_closes_a_stream_after_n_chunks_without_a_final_line(
    fake: Fake, start_wrapper: Starter
) -> None:
    w = start_wrapper()
    w.inject("stream_cut", 60, after_tokens=2)
    body = {
        "prompt": "hi",
        "max_tokens": 6,
        "stream": True,
        "options": {"fake_id": "cut", "fake_delay_s": 0.05},
    }
    lines: list[dict[str, Any]] = []
    with httpx.Client(timeout=5) as client, client.stream("POST", w.url + GEN, json=body) as r:
        assert r.status_code == 200  # sent with the first token, before the cut
        with pytest.raises(httpx.RemoteProtocolError):
            for line in r.iter_lines():
                lines.append(json.loads(line))
    assert lines == [{"response": "t0 ", "done": False}, {"response": "t1 ", "done": False}]
    wait_until(lambda: "cut" in fake[0].cancelled)  # the backend's stream was closed too
    wait_until(lambda: metric(w.url, "llm_requests_in_flight") == 0)
    assert metric(w.url, "llm_requests_total", status_code="502", **EP) == 1
    assert metric(w.url, "llm_requests_total", status_code="200", **EP) == 0
    assert metric(w.url, "llm_faults_injected_total", kind="stream_cut") == 1
    assert metric(w.url, "llm_backend_errors_total", kind="stream") == 0


def test_stream_cut_of_a_non_streamed_request_is_502(start_wrapper: Starter) -> None:
    w = start_wrapper()
    fault = w.inject("stream_cut", 60, after_tokens=3)
    r = post(w.url, {"prompt": "hi", "max_tokens": 5})
    assert r.status_code == 502
    assert r.json() == {
        "error": f"injected fault: stream_cut (fault {fault['id']}); "
        "the model backend's stream was cut after 3 token chunks"
    }
    # Shorter than the cut: it completes and the fault did not affect it.
    r = post(w.url, {"prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["output_tokens"] == 2
    assert metric(w.url, "llm_requests_total", status_code="502", **EP) == 1
    assert metric(w.url, "llm_faults_injected_total", kind="stream_cut") == 1
    assert metric(w.url, "llm_requests_in_flight") == 0


# ---------------------------------------------------------------------------- metrics


def test_metrics_with_faults_active_are_truthful_and_promtool_clean(start_wrapper: Starter) -> None:
    w = start_wrapper()
    for kind in FAULT_KINDS:
        assert metric(w.url, "llm_faults_active", kind=kind) == 0
        assert metric(w.url, "llm_faults_injected_total", kind=kind) == 0
    w.inject("latency", 60, delay_s=0.01)
    w.inject("error", 60, probability=1, status=500)
    w.inject("stream_cut", 60, after_tokens=1)
    assert post(w.url, {"prompt": "hi", "max_tokens": 2}).status_code == 500
    for kind in FAULT_KINDS:
        assert metric(w.url, "llm_faults_active", kind=kind) == 1
    injected = {kind: metric(w.url, "llm_faults_injected_total", kind=kind) for kind in FAULT_KINDS}
    assert injected == {"latency": 1, "error": 1, "stream_cut": 0}  # the error came before any token
    check = promtool_check_metrics(httpx.get(w.url + "/metrics").text)
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")
