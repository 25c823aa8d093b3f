"""Applying and reverting faults on a running local lab, and `halt_all`, which ends every active fault.

Each fault is applied by the component that also ends it by itself, so that a dead experiment process
never leaves one behind: pause by the supervisor's timer, latency/error/stream_cut by the wrapper's TTL,
cpu_stress by stress-ng's --timeout (and the supervisor). kill, restart and unload are instantaneous.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from labkit.chaos._applicable import fault_refusal
from labkit.errors import BackendError, ConfigError, LabkitError
from labkit.faults import WRAPPER_FAULT_KINDS, WRAPPER_FAULTS_ROUTE, Fault
from labkit.lab.registry import attach_backend

__all__ = ["ActiveFault", "FaultInjector", "HaltReport", "RevertOutcome", "halt_all"]

logger = logging.getLogger(__name__)

# Short: a paused service does not answer at all, and the timeline must not stall behind it.
DEFAULT_HTTP_TIMEOUT_S = 5.0
_BACKEND_KINDS = frozenset({"kill", "restart", "pause"})

# reverted: ended by us; expired: its TTL had already ended it; ended: instantaneous, nothing to undo.
RevertOutcome = Literal["reverted", "expired", "ended"]


@dataclass
class ActiveFault:
    """A fault that was applied: when, and what its end needs (`detail`: ids, pids, who holds the TTL)."""

    id: int
    fault: Fault
    applied_wall: float
    applied_monotonic: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HaltReport:
    """What `halt_all` ended. `errors` lists the steps that failed (the others were still tried)."""

    lab_running: bool
    unpaused: tuple[str, ...] = ()
    wrapper_faults_ended: int = 0
    stress_stopped: bool = False
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if not self.lab_running:
            return "no lab is running there: no fault can be active"
        parts = [
            f"unpaused {', '.join(self.unpaused)}" if self.unpaused else "no service was paused",
            f"ended {self.wrapper_faults_ended} wrapper fault(s)",
            "stopped the CPU stress" if self.stress_stopped else "no CPU stress was running",
        ]
        text = "; ".join(parts)
        if self.errors:
            text += "\nfailed: " + "\n        ".join(self.errors)
        return text


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        detail = body.get("error", body.get("detail", body))
        return str(detail)
    return str(body)


class FaultInjector:
    """Applies faults to the local lab in `lab_dir` and reverts them; remembers what it applied.

    Raises LabNotRunningError when no lab runs there. Use as a context manager (closes its HTTP client).
    """

    def __init__(self, lab_dir: Path | str, *, http_timeout_s: float = DEFAULT_HTTP_TIMEOUT_S) -> None:
        self.backend = attach_backend(Path(lab_dir))
        self.config = self.backend.saved_config()
        self._token = self.backend.lab.read_token()
        # trust_env=False: a proxy from the environment must never sit between the lab and its own API.
        self._http = httpx.Client(timeout=http_timeout_s, trust_env=False)
        self._ids = itertools.count(1)
        self.active: dict[int, ActiveFault] = {}

    # ---- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FaultInjector:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- URLs and calls -----------------------------------------------------------------------
    @property
    def wrapper_url(self) -> str:
        return self.config.wrapper_url

    def _call(
        self, method: str, url: str, what: str, *, ok: Iterable[int] = (), **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = self._http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"{what}: {method} {url} failed ({type(exc).__name__}: {exc})") from exc
        if response.status_code >= 400 and response.status_code not in set(ok):
            raise BackendError(
                f"{what}: {method} {url} answered {response.status_code}: {_error_message(response)}"
            )
        return response

    # ---- checks before anything is injected ---------------------------------------------------
    def preflight(self, faults: Iterable[Fault]) -> None:
        """ConfigError for a fault this lab cannot apply (`fault_refusal`: a model service the lab does not
        run, unload without Ollama's API; stress-ng missing)."""
        for fault in faults:
            refusal = fault_refusal(self.config, fault.kind, fault.target)
            if refusal is not None:
                raise ConfigError(f"{fault.describe()}: {refusal}")
            # The local supervisor runs stress-ng on this machine; the Docker agent runs it in its image.
            local = self.backend.name == "local"
            if fault.kind == "cpu_stress" and local and shutil.which("stress-ng") is None:
                raise ConfigError(
                    f"{fault.describe()} needs stress-ng, which is not installed; install it with "
                    "`apt-get install stress-ng` (Debian/Ubuntu) or drop cpu_stress from the schedule"
                )

    # ---- apply --------------------------------------------------------------------------------
    def apply(self, fault: Fault) -> ActiveFault:
        """Apply `fault` now (its TTL starts in the component that applies it); BackendError if refused."""
        wall, mono = time.time(), time.monotonic()
        if fault.kind in _BACKEND_KINDS:
            detail = self._apply_backend(fault)
        elif fault.kind in WRAPPER_FAULT_KINDS:
            detail = self._apply_wrapper(fault)
        elif fault.kind == "cpu_stress":
            detail = self._apply_stress(fault)
        elif fault.kind == "unload":
            detail = self._apply_unload()
        else:  # pragma: no cover - Fault validates kinds
            raise ConfigError(f"unknown fault kind {fault.kind!r}")
        active = ActiveFault(next(self._ids), fault, wall, mono, detail)
        self.active[active.id] = active
        logger.info("fault applied: %s %s", fault.describe(), detail)
        return active

    def _service_status(self, name: str) -> dict[str, Any]:
        for status in self.backend.status():
            if status.name == name:
                return {"state": status.state, "pid": status.pid, "restarts": status.restarts}
        return {}

    def _apply_backend(self, fault: Fault) -> dict[str, Any]:
        target = fault.target
        before = self._service_status(target)
        if fault.kind == "kill":
            self.backend.kill(target)  # type: ignore[arg-type]
        elif fault.kind == "restart":
            self.backend.restart(target)  # type: ignore[arg-type]
        else:
            self.backend.pause(target, fault.duration_s)  # type: ignore[arg-type]
            return {"before": before, "ttl_s": fault.duration_s, "ttl_held_by": "supervisor"}
        return {"before": before}

    def _apply_wrapper(self, fault: Fault) -> dict[str, Any]:
        body = {"kind": fault.kind, "duration_s": fault.duration_s, "params": fault.params}
        response = self._call(
            "POST", f"{self.wrapper_url}{WRAPPER_FAULTS_ROUTE}", f"injecting {fault.kind}", json=body
        )
        answer = response.json()
        return {
            "wrapper_fault_id": answer.get("id"),
            "replaced": answer.get("replaced"),
            "ttl_s": fault.duration_s,
            "ttl_held_by": "wrapper",
        }

    def _apply_stress(self, fault: Fault) -> dict[str, Any]:
        answer = self.backend.start_stress(fault.params["workers"], fault.duration_s)
        return {
            "pid": answer.get("pid"),
            "workers": answer.get("workers"),
            "timeout_s": answer.get("timeout_s"),
            "ttl_held_by": "stress-ng --timeout and the supervisor",
        }

    def _apply_unload(self) -> dict[str, Any]:
        # Ollama's unload: an empty generate request with keep_alive 0.
        body = {"model": self.config.model_name, "keep_alive": 0, "stream": False}
        answer = self._call("POST", f"{self.config.model_url}/api/generate", "unloading the model", json=body)
        try:
            done_reason = answer.json().get("done_reason")
        except (ValueError, AttributeError):
            done_reason = None
        return {"done_reason": done_reason}

    # ---- revert -------------------------------------------------------------------------------
    def revert(self, active: ActiveFault) -> tuple[RevertOutcome, dict[str, Any]]:
        """End `active` now (idempotent); (outcome, detail). BackendError when the lab refuses."""
        self.active.pop(active.id, None)
        fault = active.fault
        if fault.kind in ("kill", "restart"):
            return "ended", {"after": self._service_status(fault.target)}
        if fault.kind == "unload":
            return "ended", {}
        if fault.kind == "pause":
            before = self._service_status(fault.target)
            self.backend.unpause(fault.target)  # type: ignore[arg-type]
            return ("reverted" if before.get("state") == "paused" else "expired"), {"state_before": before}
        if fault.kind == "cpu_stress":
            return ("reverted" if self.backend.stop_stress() else "expired"), {}
        fault_id = active.detail.get("wrapper_fault_id")
        if not fault_id:
            raise BackendError(
                f"the wrapper gave no id for {fault.describe()}; end it with `labkit chaos halt`"
            )
        response = self._call(
            "DELETE",
            f"{self.wrapper_url}{WRAPPER_FAULTS_ROUTE}/{fault_id}",
            f"ending {fault.kind}",
            ok=(404,),
        )
        return ("expired" if response.status_code == 404 else "reverted"), {}

    def revert_all(self) -> list[tuple[ActiveFault, RevertOutcome | LabkitError]]:
        """Revert every fault still active, each tried even when another fails; (fault, outcome or error)."""
        results: list[tuple[ActiveFault, RevertOutcome | LabkitError]] = []
        for active in sorted(self.active.values(), key=lambda a: a.id):
            try:
                outcome, _ = self.revert(active)
            except LabkitError as exc:
                logger.error("could not revert %s: %s", active.fault.describe(), exc)
                results.append((active, exc))
            else:
                results.append((active, outcome))
        return results

    # ---- halt ---------------------------------------------------------------------------------
    def halt(self) -> HaltReport:
        """End every active fault of the lab, ours or not: unpause paused services first (a paused wrapper
        would not answer), stop the CPU stress, delete the wrapper's faults. Each step is tried."""
        errors: list[str] = []
        unpaused: list[str] = []
        try:
            statuses = self.backend.status()
        except LabkitError as exc:
            statuses = []
            errors.append(f"reading the services' states: {exc}")
        for status in statuses:
            if status.state == "paused":
                try:
                    self.backend.unpause(status.name)
                    unpaused.append(status.name)
                except LabkitError as exc:
                    errors.append(f"unpausing {status.name}: {exc}")
        stress_stopped = False
        try:
            stress_stopped = self.backend.stop_stress()
        except LabkitError as exc:
            errors.append(str(exc))
        ended = 0
        try:
            answer = self._call(
                "DELETE", f"{self.wrapper_url}{WRAPPER_FAULTS_ROUTE}", "ending the wrapper's faults"
            ).json()
            ended = int(answer.get("ended", 0)) if isinstance(answer, dict) else 0
        except LabkitError as exc:
            errors.append(str(exc))
        self.active.clear()
        return HaltReport(
            lab_running=True,
            unpaused=tuple(unpaused),
            wrapper_faults_ended=ended,
            stress_stopped=stress_stopped,
            errors=tuple(errors),
        )


def halt_all(lab_dir: Path | str) -> HaltReport:
    """End every active fault of the lab in `lab_dir` at once; idempotent (a second call ends nothing).

    No lab running: a report with `lab_running=False` (nothing can be active: faults die with the lab).
    A step that fails does not stop the others; see `HaltReport.errors` / `.ok`.
    """
    backend = attach_backend(Path(lab_dir))
    if not backend.is_running():
        return HaltReport(lab_running=False)
    with FaultInjector(lab_dir) as injector:
        return injector.halt()
