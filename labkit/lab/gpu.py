"""GPU readings through NVML (nvidia-ml-py), for the exporter and the reports.

Where NVML does not answer (no driver, no GPU) there are no readings at all — never a made-up value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

__all__ = ["GpuReader", "GpuReading"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one instant."""

    index: int
    uuid: str
    name: str
    utilization_ratio: float  # 0..1, share of the last sample period a kernel was running
    memory_used_bytes: int
    memory_total_bytes: int


class GpuReader:
    """Reads every GPU NVML reports. `available` is False when NVML cannot be initialised."""

    def __init__(self, nvml: ModuleType | None = None) -> None:
        if nvml is None:
            import pynvml as nvml_module  # nvidia-ml-py

            nvml = nvml_module
        self._nvml = nvml
        self.available = False
        self.reason = ""
        try:
            nvml.nvmlInit()
            self.available = True
        except nvml.NVMLError as exc:
            self.reason = f"NVML unavailable: {exc}"
            logger.info("no GPU readings: %s", self.reason)

    def read(self) -> list[GpuReading]:
        """Current readings; a GPU whose query fails is left out (and logged), not guessed."""
        if not self.available:
            return []
        nvml = self._nvml
        readings: list[GpuReading] = []
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            logger.warning("NVML device count failed: %s", exc)
            return []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                readings.append(
                    GpuReading(
                        index=index,
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        utilization_ratio=float(util.gpu) / 100.0,
                        memory_used_bytes=int(mem.used),
                        memory_total_bytes=int(mem.total),
                    )
                )
            except nvml.NVMLError as exc:
                logger.warning("NVML query of GPU %d failed: %s", index, exc)
        return readings

    def close(self) -> None:
        if self.available:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                logger.debug("nvmlShutdown failed: %s", exc)
            self.available = False


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
