"""The lab a notebook uses: the one running in its lab directory, or one started for it (and taken down only
by the session that started it), warmed up and scraped once by Prometheus before any run begins.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import httpx
import pandas as pd

from labkit.config import BackendName, LabConfig, load_config, resolve_lab_dir
from labkit.errors import ConfigError, LabkitError
from labkit.lab.backend import Backend
from labkit.lab.registry import attach_backend, backend_for
from labkit.scenarios.specs import LabParams

__all__ = ["LabSession", "open_lab", "resolve_out_dir", "warm_up"]


def resolve_out_dir(out_dir: str | Path | None = None) -> Path:
    """Where run directories go: `out_dir` when given, else $LABKIT_OUT_DIR (`make lab` sets it to the
    project's reports/runs, since a notebook's kernel starts in the notebook's own folder), else
    reports/runs under the current directory."""
    if out_dir:
        return Path(out_dir)
    return Path(os.environ.get("LABKIT_OUT_DIR") or "reports/runs")


@dataclass
class LabSession:
    """A lab a notebook uses. `close()` takes it down only if this session brought it up."""

    backend: Backend
    config: LabConfig
    started_here: bool

    @property
    def lab_dir(self) -> Path:
        return self.backend.lab.root

    @property
    def wrapper_url(self) -> str:
        return self.config.wrapper_url

    @property
    def prometheus_url(self) -> str:
        return self.config.prometheus_url

    def status(self) -> pd.DataFrame:
        """One row per service: state, pid, restarts, url (and the container on the Docker backend)."""
        rows = []
        for s in self.backend.status():
            row: dict[str, Any] = {
                "service": s.name, "state": s.state, "pid": s.pid, "restarts": s.restarts, "url": s.url
            }  # fmt: skip
            if s.container is not None:
                row["container"] = s.container
            rows.append(row)
        return pd.DataFrame(rows)

    def close(self) -> None:
        if self.started_here and self.backend.is_running():
            self.backend.down()
        self.started_here = False

    def __enter__(self) -> LabSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_lab(
    lab_dir: LabParams | str | Path | None = "",
    *,
    engine: str = "llama",
    backend: str = "local",
    say: Callable[[str], None] | None = print,
    **settings: Any,
) -> LabSession:
    """The lab running in `lab_dir` ("" or None: the default lab directory), or a new one started there
    with `engine`, `backend` ("local" processes or "docker" containers) and `settings` (any `labkit up`
    setting, e.g. wrapper_port=8001). A notebook passes its parameters instead (a LabParams spec: its
    `lab_dir`, `engine` and `backend`).

    A lab this call starts is taken down by `close()` and, as a backstop, when the Python process (the
    notebook's kernel) exits. A lab that was already running is used as it is and left running.
    Either way it returns once Prometheus has scraped every service, so that a run's series are whole."""
    if isinstance(lab_dir, LabParams):
        params = lab_dir
        lab_dir, engine, backend = params.lab_dir, params.engine, params.backend
    if backend not in get_args(BackendName):
        raise ConfigError(f"backend must be 'local' or 'docker', not {backend!r}")
    say = say or (lambda _line: None)
    root = resolve_lab_dir(Path(lab_dir) if lab_dir else None)
    attached = attach_backend(root)
    if attached.is_running():
        config = attached.saved_config()
        say(f"using the lab already running in {root} (engine {config.engine}, backend {attached.name})")
        attached.wait_scraped(say=say)  # e.g. `labkit up`, then a run at once
        return LabSession(attached, config, started_here=False)
    config = load_config(lab_dir=root, engine=engine, backend=backend, **settings)
    lab = backend_for(config)
    say(f"starting a lab in {root} (engine {engine}, backend {backend})...")
    started = time.monotonic()
    lab.up(wait_scraped=False)  # on failure nothing is left running
    session = LabSession(lab, config, started_here=True)
    atexit.register(session.close)  # the backstop, before anything else can fail
    session.config = lab.saved_config()
    say(f"lab ready in {time.monotonic() - started:.1f} s")
    # The warm-up overlaps Prometheus' first scrape (5-6 s after it starts); no run starts before both.
    warm_up(session, say=say)
    try:
        lab.wait_scraped(say=say)
    except LabkitError:
        session.close()
        raise
    return session


def warm_up(session: LabSession, *, say: Callable[[str], None] | None = print, max_tokens: int = 8) -> float:
    """One request through the wrapper, so that a fresh lab's first measured request does not pay for the
    model load (and, in a new container, for reading the model file from disk); returns how long it took.

    A failure is reported, not raised: the run's own steady-state check will say what is wrong."""
    say = say or (lambda _line: None)
    started = time.monotonic()
    try:
        response = httpx.post(
            f"{session.wrapper_url}/generate",
            json={"prompt": "Hello", "max_tokens": max_tokens},
            headers=session.config.wrapper_auth_headers(),
            timeout=session.config.backend_timeout_s,
            trust_env=False,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        say(f"warm-up request failed ({exc}); going on")
        return time.monotonic() - started
    took = time.monotonic() - started
    say(f"warmed up: the first request took {took:.1f} s")
    return took
