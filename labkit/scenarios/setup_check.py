"""What this machine has for the lab, checked one row at a time (notebook 00_check_setup)."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import sys
from typing import Any

import httpx
import pandas as pd

from labkit._version import __version__
from labkit.config import embedded_model_path
from labkit.errors import LabkitError
from labkit.lab.gpu import GpuReader
from labkit.scenarios.session import LabSession

__all__ = ["check_setup"]


def check_setup(session: LabSession | None = None) -> pd.DataFrame:
    """What this machine has for the lab, one row per check: `ok` (True, False, or None for optional
    parts that are simply absent, such as a GPU) and what was found."""
    rows: list[dict[str, Any]] = []

    def check(name: str, ok: bool | None, found: str) -> None:
        rows.append({"check": name, "ok": ok, "found": found})

    check("python", sys.version_info >= (3, 11), platform.python_version())
    check("labkit", True, __version__)
    for binary, needed in (("prometheus", True), ("promtool", True), ("stress-ng", False)):
        path = shutil.which(binary)
        missing = "not on PATH" + ("" if needed else " (cpu_stress faults need it; random_chaos draws them)")
        check(binary, True if path else (False if needed else None), path or missing)
    # The real model's parts are needed only where the lab runs (or will run) llama.cpp with SmolLM2.
    needs_llama = session is None or session.config.engine in ("llama", "llamacpp-server")

    def model_part(name: str, present: bool, found: str) -> None:
        check(name, True if present else (False if needs_llama else None), found)

    llama = importlib.util.find_spec("llama_cpp") is not None
    model_part("llama-cpp-python", llama, "importable" if llama else "missing: pip install '.[llama]'")
    try:
        model = embedded_model_path()
        model_part("model file", model.is_file(), str(model))
    except LabkitError as exc:
        model_part("model file", False, str(exc))
    gpus = GpuReader().read()
    check(
        "GPU (NVML)",
        True if gpus else None,
        ", ".join(g.name for g in gpus) if gpus else "no GPU on this machine",
    )
    if session is not None:
        for svc in session.backend.status():
            check(f"service {svc.name}", svc.state in ("ready", "external"), f"{svc.state} {svc.url}")
        try:
            answer = httpx.post(
                f"{session.wrapper_url}/generate",
                json={"prompt": "Say hi.", "max_tokens": 8},
                headers=session.config.wrapper_auth_headers(),
                timeout=60,
                trust_env=False,
            )
            body = answer.json()
            check(
                "generate",
                answer.status_code == 200,
                f"{answer.status_code}: {body.get('response', body)!r}"[:120],
            )
        except httpx.HTTPError as exc:
            check("generate", False, f"{type(exc).__name__}: {exc}")
    return pd.DataFrame(rows)
