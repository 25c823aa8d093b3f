from __future__ import annotations

import os
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from labkit.lab.gpu import GpuReader
from labkit.lab.manager.exporter import LabCollector, ServiceSample
from tests.conftest import promtool_check_metrics


class FakeNvml:
    """Stands in for NVML on machines without an NVIDIA GPU (this one): a real GPU cannot be produced
    here. It mimics nvidia-ml-py's calls and error type; the real library is exercised by GpuReader()
    below, which must report no GPU on such a machine."""

    class NVMLError(Exception):
        pass

    def __init__(self, *, init_fails: bool = False, broken_index: int | None = None) -> None:
        self.init_fails = init_fails
        self.broken_index = broken_index

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index == self.broken_index:
            raise self.NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=37 + handle, memory=10)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=1_000_000 * (handle + 1), total=80_000_000_000, free=0)

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle}"

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H100"


def _scrape(samples: list[ServiceSample], gpus: GpuReader) -> str:
    registry = CollectorRegistry()
    registry.register(LabCollector(lambda: samples, gpus))
    return generate_latest(registry).decode()


SAMPLES = [
    ServiceSample(name="model", up=True, restarts=2, pid=os.getpid(), started_at=1_700_000_000.0),
    ServiceSample(name="wrapper", up=False, restarts=0, pid=None, started_at=None),
]


def test_restarts_up_cpu_and_memory_per_service() -> None:
    body = _scrape(SAMPLES, GpuReader(FakeNvml(init_fails=True)))  # type: ignore[arg-type]
    assert 'lab_service_restarts_total{service="model"} 2.0' in body
    assert 'lab_service_restarts_total{service="wrapper"} 0.0' in body
    assert 'lab_service_up{service="model"} 1.0' in body
    assert 'lab_service_up{service="wrapper"} 0.0' in body
    # Real readings of this very process.
    assert 'lab_service_resident_memory_bytes{service="model"}' in body
    assert 'lab_service_cpu_seconds_total{service="model"}' in body
    # No process, no made-up reading.
    assert 'lab_service_resident_memory_bytes{service="wrapper"}' not in body


def test_no_gpu_means_available_zero_and_no_gpu_series() -> None:
    body = _scrape(SAMPLES, GpuReader(FakeNvml(init_fails=True)))  # type: ignore[arg-type]
    assert "lab_gpu_available 0.0" in body
    assert "lab_gpu_utilization_ratio" not in body
    assert "lab_gpu_memory_used_bytes" not in body


def test_real_nvml_on_this_machine_reports_what_it_finds() -> None:
    reader = GpuReader()
    readings = reader.read()
    body = _scrape(SAMPLES, reader)
    assert f"lab_gpu_available {1.0 if readings else 0.0}" in body
    assert ("lab_gpu_utilization_ratio" in body) == bool(readings)
    reader.close()


def test_gpu_readings_are_exported_per_gpu_as_ratios_and_bytes() -> None:
    body = _scrape(SAMPLES, GpuReader(FakeNvml(broken_index=1)))  # type: ignore[arg-type]
    assert "lab_gpu_available 1.0" in body
    assert 'lab_gpu_utilization_ratio{gpu="0",name="NVIDIA H100",uuid="GPU-0"} 0.37' in body
    assert 'lab_gpu_memory_total_bytes{gpu="0",name="NVIDIA H100",uuid="GPU-0"} 8e+10' in body
    # The GPU whose query failed is left out rather than guessed.
    assert 'gpu="1"' not in body


def test_promtool_accepts_the_exporter_metrics() -> None:
    body = _scrape(SAMPLES, GpuReader(FakeNvml()))  # type: ignore[arg-type]
    result = promtool_check_metrics(body)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (
        result.stdout + result.stderr
    )
