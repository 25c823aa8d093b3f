"""Every metric the Grafana dashboard reads is one the lab exports: names parsed out of each panel's and
annotation's PromQL, compared with what a running sim lab's services expose, what its Prometheus holds,
the recording rules the lab loaded (its rule file), and the GPU series of labkit.lab.manager.exporter (which
appear only where
NVML reports a GPU, so they are taken from the exporter's own code, run on a stand-in NVML).
"""

from __future__ import annotations

import re

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from generators.dashboard import build_dashboard, dashboard_queries
from labkit.lab.gpu import GpuReader
from labkit.lab.local import LocalBackend
from labkit.lab.manager.exporter import LabCollector
from labkit.measure.promql import metric_names
from labkit.measure.slo.rules import RULES_FILE_NAME
from tests.test_exporter import FakeNvml

pytestmark = pytest.mark.integration

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)")
# The series a text exposition has for each family `# TYPE <name> <type>` declares, samples or not
# (a labelled counter with no child yet, such as lab_remediation_actions_total, has only the TYPE line).
_SERIES_OF_TYPE = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("", "_info"),
    "untyped": ("",),
}


def exposed_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition has or declares."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            base = name.removesuffix("_total") if kind == "counter" else name
            names.update(base + suffix for suffix in _SERIES_OF_TYPE[kind])
        elif line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match is not None, line
            names.add(match.group(1))
    return names


def test_exposed_names_include_declared_families_without_samples() -> None:
    text = '# TYPE a_total counter\n# TYPE h histogram\nh_bucket{le="1.0"} 0.0\n# TYPE g gauge\ng 1.0\n'
    assert exposed_names(text) == {"a_total", "a_created", "h_bucket", "h_sum", "h_count", "h_created", "g"}


def _gpu_names() -> set[str]:
    # A stand-in for NVML (no GPU on this machine): the series names come from the exporter's real code.
    registry = CollectorRegistry()
    registry.register(LabCollector(list, GpuReader(FakeNvml())))  # type: ignore[arg-type]
    names = exposed_names(generate_latest(registry).decode())
    assert {n for n in names if n.startswith("lab_gpu_")} >= {
        "lab_gpu_available",
        "lab_gpu_utilization_ratio",
    }
    return names


def test_every_metric_the_dashboard_reads_is_exported_by_the_lab(running_lab: LocalBackend) -> None:
    cfg = running_lab.config
    base = "http://127.0.0.1"
    # One streamed request, so that every per-request series has had a sample too.
    reply = httpx.post(
        f"{base}:{cfg.wrapper_port}/generate",
        json={"prompt": "hi", "max_tokens": 4, "stream": True},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    exported: set[str] = set()
    for port in (cfg.wrapper_port, cfg.model_port, cfg.exporter_port, cfg.prometheus_port):
        exported |= exposed_names(httpx.get(f"{base}:{port}/metrics", timeout=10).text)
    # What Prometheus itself holds: scraped series plus those it synthesises (up, scrape_*).
    held = httpx.get(f"{base}:{cfg.prometheus_port}/api/v1/label/__name__/values", timeout=10).json()["data"]
    exported |= set(held)
    # What the lab's rules record: the rule file `labkit up` wrote for Prometheus (the lab alert profile).
    lab_rules = yaml.safe_load((running_lab.lab.rules_dir / RULES_FILE_NAME).read_text(encoding="utf-8"))
    rules = [rule for group in lab_rules["groups"] for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    known = exported | recorded | _gpu_names()

    read = {name: q.where for q in dashboard_queries(build_dashboard()) for name in metric_names(q.expr)}
    assert len(read) >= 15
    missing = {name: where for name, where in read.items() if name not in known}
    assert not missing, f"the dashboard reads metrics nothing exports: {missing}"
