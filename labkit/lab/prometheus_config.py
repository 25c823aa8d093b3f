"""Renders the lab's Prometheus configuration from the `stack/prometheus` template.

One scrape job per service that exposes `/metrics` (Alertmanager included); a real Ollama has none
(ollama/ollama#3144), nor has llama-cpp-python's server. An upstream's own endpoint (vLLM, SGLang, TGI:
`--upstream-metrics-url`) is the job `upstream`; its series keep their names (`vllm:num_requests_waiting`:
Prometheus stores the colon).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from labkit.config import LabConfig, stack_dir

__all__ = [
    "UPSTREAM_JOB",
    "ScrapeJob",
    "alertmanager_target",
    "render_prometheus_config",
    "render_scrape_config",
    "scrape_jobs",
    "upstream_scrape_job",
]

# The job of the model service's own metrics endpoint when labkit did not write that service.
UPSTREAM_JOB = "upstream"


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    target: str
    path: str = "/metrics"
    scheme: str = "http"


def upstream_scrape_job(url: str) -> ScrapeJob:
    """The job `upstream` for a metrics URL (`http://127.0.0.1:8000/metrics`)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return ScrapeJob(UPSTREAM_JOB, f"{host}:{port}", parts.path or "/", parts.scheme)


def scrape_jobs(config: LabConfig) -> list[ScrapeJob]:
    host = config.host
    jobs = [
        ScrapeJob("wrapper", f"{host}:{config.wrapper_port}"),
        ScrapeJob("exporter", f"{host}:{config.exporter_port}"),
        ScrapeJob("alertmanager", alertmanager_target(config)),
        ScrapeJob("prometheus", f"{host}:{config.prometheus_port}"),
    ]
    if config.engine in ("llama", "sim"):
        jobs.insert(0, ScrapeJob("model", f"{host}:{config.model_port}"))
    upstream = config.upstream_metrics
    if upstream is not None:
        jobs.insert(0, upstream_scrape_job(upstream))
    return jobs


def alertmanager_target(config: LabConfig) -> str:
    """The lab's Alertmanager as Prometheus addresses it (host:port)."""
    return f"{config.host}:{config.alertmanager_port}"


def _duration(seconds: float) -> str:
    millis = max(1, round(seconds * 1000))
    return f"{millis}ms"


def render_prometheus_config(config: LabConfig, *, lab_id: str, rules_dir: Path) -> str:
    """The configuration of a lab's Prometheus: every service of `config` on its host and port, its alerts
    sent to the lab's Alertmanager."""
    return render_scrape_config(
        scrape_jobs(config),
        scrape_interval_s=config.scrape_interval_s,
        lab_id=lab_id,
        rules_dir=str(rules_dir),
        alertmanagers=[alertmanager_target(config)],
    )


def render_scrape_config(
    jobs: Sequence[ScrapeJob],
    *,
    scrape_interval_s: float,
    lab_id: str,
    rules_dir: str,
    alertmanagers: Sequence[str] = (),
) -> str:
    """The template rendered for any set of targets, e.g. compose's service names (generators.compose);
    `alertmanagers` (host:port each) receive the alerts, none: the alerts stay in Prometheus."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(stack_dir() / "prometheus"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    template = env.get_template("prometheus.yml.j2")
    interval = scrape_interval_s
    return template.render(
        scrape_interval=_duration(interval),
        # Prometheus refuses a timeout longer than the interval.
        scrape_timeout=_duration(min(interval, max(0.5, interval * 0.8))),
        lab_id=lab_id,
        rules_dir=rules_dir,
        jobs=list(jobs),
        alertmanagers=list(alertmanagers),
    )
