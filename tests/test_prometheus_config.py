from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.config import LabConfig
from labkit.lab.prometheus_config import render_prometheus_config, upstream_scrape_job


def _render(tmp_path: Path, **kw: object) -> str:
    cfg = LabConfig(lab_dir=tmp_path, **kw)  # type: ignore[arg-type]
    return render_prometheus_config(cfg, lab_id="abc", rules_dir=tmp_path / "rules")


def test_every_service_with_metrics_is_scraped_at_one_second(tmp_path: Path) -> None:
    doc = yaml.safe_load(_render(tmp_path, engine="sim"))
    assert doc["global"]["scrape_interval"] == "1000ms"
    jobs = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in doc["scrape_configs"]}
    assert jobs == {
        "model": "127.0.0.1:11434",
        "wrapper": "127.0.0.1:8000",
        "exporter": "127.0.0.1:9188",
        "alertmanager": "127.0.0.1:9093",
        "prometheus": "127.0.0.1:9090",
    }
    # Its alerts go to the lab's Alertmanager.
    assert doc["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]


def test_a_real_ollama_is_not_scraped_because_it_has_no_metrics(tmp_path: Path) -> None:
    doc = yaml.safe_load(_render(tmp_path, engine="ollama", ollama_url="http://127.0.0.1:11999"))
    assert "model" not in {job["job_name"] for job in doc["scrape_configs"]}


@pytest.mark.parametrize("interval", [0.25, 1.0, 15.0])
def test_promtool_accepts_the_generated_config(tmp_path: Path, interval: float) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    (tmp_path / "rules").mkdir()
    path = tmp_path / "prometheus.yml"
    path.write_text(_render(tmp_path, engine="sim", scrape_interval_s=interval))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _jobs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in doc["scrape_configs"]}


def test_an_upstream_metrics_url_is_scraped_as_job_upstream(tmp_path: Path) -> None:
    doc = yaml.safe_load(
        _render(
            tmp_path,
            openai_url="http://127.0.0.1:8001/v1",
            upstream_metrics_url="http://127.0.0.1:8001/metrics",
        )
    )
    jobs = _jobs(doc)
    # the external model: no job model
    assert set(jobs) == {"upstream", "wrapper", "exporter", "alertmanager", "prometheus"}
    assert jobs["upstream"]["metrics_path"] == "/metrics"
    assert jobs["upstream"]["static_configs"][0]["targets"] == ["127.0.0.1:8001"]
    assert "scheme" not in jobs["upstream"]  # Prometheus' default, http


def test_an_https_upstream_on_ipv6_keeps_its_scheme_port_and_path(tmp_path: Path) -> None:
    job = upstream_scrape_job("https://[::1]/stack/metrics")
    assert (job.name, job.target, job.path, job.scheme) == (
        "upstream",
        "[::1]:443",
        "/stack/metrics",
        "https",
    )
    doc = yaml.safe_load(
        _render(tmp_path, engine="llamacpp-server", upstream_metrics_url="https://[::1]/stack/metrics")
    )
    upstream = _jobs(doc)["upstream"]
    assert (upstream["scheme"], upstream["metrics_path"]) == ("https", "/stack/metrics")


def test_llamacpp_server_has_no_metrics_endpoint_to_scrape(tmp_path: Path) -> None:
    doc = yaml.safe_load(_render(tmp_path, engine="llamacpp-server"))
    assert set(_jobs(doc)) == {"wrapper", "exporter", "alertmanager", "prometheus"}
    none = yaml.safe_load(_render(tmp_path, engine="openai", openai_url="http://127.0.0.1:8001/v1"))
    assert "upstream" not in _jobs(none)


def test_promtool_accepts_an_upstream_job(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    (tmp_path / "rules").mkdir()
    path = tmp_path / "prometheus.yml"
    path.write_text(_render(tmp_path, engine="llamacpp-server", upstream_metrics_url="https://localhost:9/m"))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
