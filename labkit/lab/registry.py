"""Which backend runs a lab: by name for a new lab (`backend_for(config)`), by what the lab directory saved
for an existing one (`attach_backend(lab_dir)`). The one place that knows every backend; backends know none.
"""

from __future__ import annotations

from pathlib import Path

from labkit.config import BackendName, LabConfig
from labkit.lab.backend import Backend, saved_backend_name
from labkit.lab.docker import DockerBackend
from labkit.lab.local import LocalBackend

__all__ = ["BACKENDS", "attach_backend", "backend_for"]

BACKENDS: dict[BackendName, type[Backend]] = {"local": LocalBackend, "docker": DockerBackend}


def backend_for(config: LabConfig) -> Backend:
    """A backend for a new lab with `config` (its `backend` setting picks which)."""
    return BACKENDS[config.backend](config)


def attach_backend(lab_dir: Path) -> Backend:
    """The backend of the lab in `lab_dir` (for status, down, logs, chaos): the one that started it."""
    return BACKENDS[saved_backend_name(lab_dir)].attach(lab_dir)
