"""The lab exporter: restarts, up, per-service CPU and memory, GPU — read at scrape time.

Hosted by the supervisor (which knows every restart it performed), served on the exporter port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from labkit.lab.gpu import GpuReader

__all__ = ["LabCollector", "ServiceSample"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSample:
    """What the supervisor knows of one service when Prometheus scrapes."""

    name: str
    up: bool
    restarts: int
    pid: int | None
    started_at: float | None  # unix time of the current process's start
    include_children: bool = True  # False for the supervisor itself, whose children are the services


class LabCollector(Collector):
    """Collects the lab's own metrics from a callable that snapshots the supervisor's services."""

    def __init__(self, services: Callable[[], Iterable[ServiceSample]], gpus: GpuReader) -> None:
        self._services = services
        self._gpus = gpus

    def collect(self) -> Iterator[Metric]:
        samples = list(self._services())
        restarts = CounterMetricFamily(
            "lab_service_restarts",
            "Restarts of each lab service by the restart policy or on request, each counted once.",
            labels=["service"],
        )
        up = GaugeMetricFamily(
            "lab_service_up", "1 when the service answers its readiness check.", labels=["service"]
        )
        cpu = CounterMetricFamily(
            "lab_service_cpu_seconds",
            "User+system CPU time of the service's current process tree (resets when it restarts).",
            labels=["service"],
        )
        rss = GaugeMetricFamily(
            "lab_service_resident_memory_bytes",
            "Resident memory of the service's current process tree.",
            labels=["service"],
        )
        started = GaugeMetricFamily(
            "lab_service_start_time_seconds",
            "Unix time the service's current process started.",
            labels=["service"],
        )
        for svc in samples:
            restarts.add_metric([svc.name], svc.restarts)
            up.add_metric([svc.name], 1.0 if svc.up else 0.0)
            if svc.started_at is not None:
                started.add_metric([svc.name], svc.started_at)
            usage = _process_tree_usage(svc.pid, svc.include_children)
            if usage is not None:
                cpu.add_metric([svc.name], usage[0])
                rss.add_metric([svc.name], usage[1])
        yield from (restarts, up, cpu, rss, started)
        yield from self._collect_gpus()

    def _collect_gpus(self) -> Iterator[Metric]:
        readings = self._gpus.read()
        available = GaugeMetricFamily("lab_gpu_available", "1 when NVML answers and reports a GPU, else 0.")
        available.add_metric([], 1.0 if readings else 0.0)
        yield available
        if not readings:
            return
        labels = ["gpu", "uuid", "name"]
        util = GaugeMetricFamily("lab_gpu_utilization_ratio", "GPU busy ratio (NVML), 0..1.", labels=labels)
        used = GaugeMetricFamily("lab_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels)
        total = GaugeMetricFamily("lab_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels=labels)
        for gpu in readings:
            key = [str(gpu.index), gpu.uuid, gpu.name]
            util.add_metric(key, gpu.utilization_ratio)
            used.add_metric(key, gpu.memory_used_bytes)
            total.add_metric(key, gpu.memory_total_bytes)
        yield from (util, used, total)


def _process_tree_usage(pid: int | None, include_children: bool) -> tuple[float, float] | None:
    """(cpu seconds, rss bytes) summed over a process and its descendants; None when it is gone."""
    if pid is None:
        return None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)] if include_children else [root]
    except psutil.NoSuchProcess:
        return None
    cpu_s = 0.0
    rss = 0.0
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu_s += times.user + times.system
                rss += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return cpu_s, rss
