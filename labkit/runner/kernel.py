"""The `labkit` kernelspec the notebooks run on, made to start this very interpreter (papermill#251, #761: the
wrong interpreter or `NoSuchKernel` inside virtualenvs), and a kernel manager that keeps the kernel's own
stderr in the run directory.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import IO, Any

from labkit.errors import LabkitError

__all__ = ["KERNEL_NAME", "KernelSpecError", "ensure_kernelspec", "kernel_manager_logging_to"]

logger = logging.getLogger(__name__)

KERNEL_NAME = "labkit"


class KernelSpecError(LabkitError):
    """The `labkit` kernelspec cannot be made to start this interpreter."""


def ensure_kernelspec(name: str = KERNEL_NAME, *, prefix: Path | None = None) -> Path:
    """Make sure the kernelspec `name` starts this interpreter, creating or repairing it; its directory.

    Without `prefix`: the spec Jupyter resolves `name` to is used when it starts this interpreter, else one
    is written in this environment (sys.prefix) and resolved again, so that a spec of the same name
    earlier on the Jupyter path (JUPYTER_PATH, the user's) cannot silently win. With `prefix`: the spec in
    `prefix`/share/jupyter/kernels is created or repaired, and nothing is resolved."""
    if prefix is not None:
        kernel_dir = prefix / "share" / "jupyter" / "kernels" / name
        if not _starts_this_interpreter(kernel_dir / "kernel.json"):
            _install_kernelspec(name, prefix)
        return kernel_dir
    found = _resolve_kernelspec(name)
    if found is not None and _starts_this_interpreter(found / "kernel.json"):
        return found
    _install_kernelspec(name, Path(sys.prefix))
    found = _resolve_kernelspec(name)
    if found is None or not _starts_this_interpreter(found / "kernel.json"):
        raise KernelSpecError(
            f"Jupyter finds the {name!r} kernel at {found}, which does not start {sys.executable}; "
            f"remove it (`jupyter kernelspec remove {name}`) or unset JUPYTER_PATH, then run again"
        )
    return found


def _resolve_kernelspec(name: str) -> Path | None:
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().find_kernel_specs().get(name)
    return None if found is None else Path(found)


def _install_kernelspec(name: str, prefix: Path) -> None:
    from ipykernel.kernelspec import install

    kernel_dir = prefix / "share" / "jupyter" / "kernels" / name
    logger.info("installing the %s kernelspec in %s for %s", name, kernel_dir, sys.executable)
    try:
        install(kernel_name=name, display_name=f"Python ({name})", prefix=str(prefix))
    except OSError as exc:
        raise KernelSpecError(
            f"cannot write the {name!r} kernelspec in {kernel_dir} ({exc}); run labkit from a virtual "
            f"environment you own (`make setup`), or register this interpreter once with "
            f"`{sys.executable} -m ipykernel install --user --name {name}`"
        ) from exc
    if not _starts_this_interpreter(kernel_dir / "kernel.json"):
        raise KernelSpecError(f"the {name!r} kernelspec in {kernel_dir} does not start {sys.executable}")


def kernel_manager_logging_to(log: IO[bytes]) -> type:
    """A kernel manager whose kernel writes its stderr to `log`: ipykernel logs a warning for every kernel
    on loopback TCP, and a KeyboardInterrupt when papermill shuts it down, which do not belong on the
    terminal of a batch run, but do belong in the run directory."""
    from jupyter_client.manager import AsyncKernelManager

    class _LoggedKernelManager(AsyncKernelManager):  # type: ignore[misc]
        async def start_kernel(self, **kw: Any) -> None:  # type: ignore[override]
            kw.setdefault("stderr", log)
            await super().start_kernel(**kw)

    return _LoggedKernelManager


def _starts_this_interpreter(kernel_json: Path) -> bool:
    try:
        spec = json.loads(kernel_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    argv = spec.get("argv") if isinstance(spec, dict) else None
    return (
        isinstance(argv, list)
        and argv[:1] == [sys.executable]
        and "ipykernel_launcher" in argv
        and "{connection_file}" in argv
    )
