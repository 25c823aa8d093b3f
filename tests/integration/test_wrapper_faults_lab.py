"""The wrapper's fault API inside a real lab: it takes the lab's token, its faults show in Prometheus,
and they end by their TTL without anyone calling it again."""

from __future__ import annotations

import time

import httpx
import pytest

from labkit.lab.local import LocalBackend

pytestmark = pytest.mark.integration


def _prometheus(backend: LocalBackend, query: str) -> float | None:
    url = f"http://127.0.0.1:{backend.config.prometheus_port}/api/v1/query"
    result = httpx.get(url, params={"query": query}).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def _wait(condition, timeout_s: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_latency_fault_through_the_lab_token_is_seen_by_clients_and_prometheus(
    running_lab: LocalBackend,
) -> None:
    cfg = running_lab.config
    wrapper = f"http://127.0.0.1:{cfg.wrapper_port}"
    headers = {"Authorization": f"Bearer {running_lab.lab.read_token()}"}
    assert (
        httpx.post(
            f"{wrapper}/admin/faults", json={"kind": "latency", "duration_s": 5, "params": {"delay_s": 0.5}}
        ).status_code
        == 401
    )
    created = httpx.post(
        f"{wrapper}/admin/faults",
        headers=headers,
        json={"kind": "latency", "duration_s": 4, "params": {"delay_s": 0.5}},
    )
    assert created.status_code == 201, created.text
    r = httpx.post(f"{wrapper}/generate", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
    assert r.status_code == 200 and r.json()["time_to_first_token_seconds"] >= 0.5
    _wait(lambda: _prometheus(running_lab, 'llm_faults_active{kind="latency"}') == 1)
    # The TTL is the wrapper's: nobody ends it, and it is gone.
    _wait(lambda: _prometheus(running_lab, 'llm_faults_active{kind="latency"}') == 0)
    assert httpx.get(f"{wrapper}/admin/faults", headers=headers).json()["faults"] == []
    assert _prometheus(running_lab, 'llm_faults_injected_total{kind="latency"}') == 1
