"""Remediation against a real lab: an injected latency in the wrapper breaches the p95 signal in
Prometheus; a dry run only journals, the real run restarts the wrapper (which drops the fault) and
the restart is counted in lab_remediation_actions_total and lab_service_restarts_total."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from labkit.backends.local import LocalBackend
from labkit.remediation import RemediationPolicy, Remediator, p95_latency_query, prometheus_signal
from labkit.rundir import RunDirectory

pytestmark = pytest.mark.integration


def _traffic(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + 90  # bounded even if the test forgets to stop it
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                client.post(url, json={"prompt": "hi", "max_tokens": 2})
            except httpx.HTTPError:
                time.sleep(0.1)  # the wrapper is restarting


def _steps_until(rem: Remediator, outcome: str, limit: int) -> list[str]:
    seen = []
    for _ in range(limit):
        seen.append(rem.step().outcome)
        if seen[-1] == outcome:
            return seen
        time.sleep(rem.policy.interval_s)
    raise AssertionError(f"no {outcome!r} in {seen}")


def test_latency_breach_is_remediated_by_a_counted_restart(running_lab: LocalBackend, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = running_lab.config
    wrapper = f"http://127.0.0.1:{cfg.wrapper_port}"
    prometheus = f"http://127.0.0.1:{cfg.prometheus_port}"
    headers = {"Authorization": f"Bearer {running_lab.lab.read_token()}"}
    fault = {"kind": "latency", "duration_s": 120, "params": {"delay_s": 0.6}}
    assert httpx.post(f"{wrapper}/admin/faults", headers=headers, json=fault).status_code == 201
    run = RunDirectory.create(tmp_path, "remediation")
    policy = dict(
        target="wrapper", threshold_s=0.3, window_s=4, interval_s=1, breaches_to_act=2, cooldown_s=60
    )
    signal = prometheus_signal(prometheus, p95_latency_query(4))
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(f"{wrapper}/generate", stop))
    traffic.start()
    try:
        dry = Remediator(RemediationPolicy(**policy, dry_run=True), signal, running_lab, journal=run.journal)
        _steps_until(dry, "dry_run", 30)
        assert next(s for s in running_lab.status() if s.name == "wrapper").restarts == 0
        real = Remediator(RemediationPolicy(**policy), signal, running_lab, journal=run.journal)
        _steps_until(real, "acted", 30)
    finally:
        stop.set()
        traffic.join(timeout=60)
    # The restart is graceful (in-flight requests finish first), so it is counted when the old process exits.
    deadline = time.monotonic() + 30
    while next(s for s in running_lab.status() if s.name == "wrapper").restarts != 1:
        assert time.monotonic() < deadline, running_lab.status()
        time.sleep(0.2)
    # The restarted wrapper has no fault: requests are fast again.
    while True:
        try:
            r = httpx.post(f"{wrapper}/generate", json={"prompt": "hi", "max_tokens": 2}, timeout=10)
            if r.status_code == 200 and r.json()["time_to_first_token_seconds"] < 0.6:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the wrapper did not recover"
        time.sleep(0.2)
    assert httpx.get(f"{wrapper}/admin/faults", headers=headers).json()["faults"] == []
    metrics = httpx.get(f"http://127.0.0.1:{cfg.exporter_port}/metrics").text
    assert (
        'lab_remediation_actions_total{action="restart",reason="p95_above_0.3s",target="wrapper"} 1.0'
        in metrics
    )
    kinds = [e["kind"] for e in run.read_jsonl(RunDirectory.EVENTS)]
    assert kinds.count("remediation_action") == 2  # the dry run's and the real one
    actions = [e for e in run.read_jsonl(RunDirectory.EVENTS) if e["kind"] == "remediation_action"]
    assert [a["dry_run"] for a in actions] == [True, False]
    assert all(a["value_s"] > 0.3 for a in actions)
