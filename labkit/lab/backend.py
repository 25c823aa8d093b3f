"""The host side of a lab, whatever runs it: the lab directory's saved settings, the lock around `up`/`down`,
`up` itself (checks, then start, then the waits for readiness and for Prometheus' first scrape, and on failure
nothing left running), `down`, and the client of the control API (status, kill, restart, pause, stress).

The lab's manager — the local supervisor or the Docker agent — serves the same control API on the exporter
port, so every action but starting, stopping and reading logs is the same HTTP call on either backend. A
backend implements `Backend`'s abstract methods; `labkit.lab.registry` picks the one of a lab directory.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx

from labkit.atomic import write_atomically
from labkit.config import BackendName, LabConfig
from labkit.durations import prometheus_duration_s
from labkit.errors import (
    BackendError,
    ConfigError,
    LabAlreadyRunningError,
    LabNotRunningError,
    PortInUseError,
    ServiceStartError,
)
from labkit.lab.alertmanager_config import render_alertmanager_config
from labkit.lab.contract import (
    ALERTS_ROUTE,
    ALERTS_WEBHOOK_ROUTE,
    SERVICE_NAMES,
    STATUS_ROUTE,
    STRESS_ROUTE,
    ServiceAction,
    ServiceName,
    ServiceStatus,
    service_action_route,
)
from labkit.lab.labdir import LabDir
from labkit.lab.prometheus_config import render_prometheus_config, scrape_jobs
from labkit.notifications import AlertNotification
from labkit.sockets import port_is_free

__all__ = ["DEFAULT_SCRAPE_TIMEOUT_S", "Backend", "describe_unscraped", "lab_ports", "saved_backend_name"]

# Prometheus 2.42 applies new scrape targets on fixed 5 s tickers (service discovery, then the scrape
# manager), so its first scrape of a fresh lab comes 5-6 s after it starts; this bound leaves room for a
# loaded machine.
DEFAULT_SCRAPE_TIMEOUT_S = 15.0
_MAX_SCRAPE_TIMEOUT_S = 600.0
CONTROL_TIMEOUT_S = 10.0

_PORT_FLAGS = {
    "model": ("model_port", "--model-port"),
    "wrapper": ("wrapper_port", "--wrapper-port"),
    "alertmanager": ("alertmanager_port", "--alertmanager-port"),
    "prometheus": ("prometheus_port", "--prometheus-port"),
    "exporter": ("exporter_port", "--exporter-port"),
}


def lab_ports(config: LabConfig) -> list[tuple[str, int, str]]:
    """The ports a lab with `config` listens on, as (service, port, the flag that changes it): the model's
    only when the lab runs the model service itself."""
    return [
        (service, getattr(config, field), flag)
        for service, (field, flag) in _PORT_FLAGS.items()
        if service != "model" or config.supervised_model
    ]


def saved_backend_name(lab_dir: Path) -> BackendName:
    """The backend that started the lab in `lab_dir` ("local" when none did, or for labs from before)."""
    try:
        data = json.loads(LabDir(lab_dir).config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "local"
    backend = data.get("backend") if isinstance(data, dict) else None
    return "docker" if backend == "docker" else "local"


class Backend(ABC):
    """A lab on some backend: all its state lives in `config.lab_dir`. Subclasses say how services start,
    stop and log (the abstract methods); everything else is the control API, the same on every backend."""

    name: ClassVar[BackendName]
    manager_name: ClassVar[str] = "manager"
    manager_service: ClassVar[str] = "supervisor"  # whose log says why nothing started

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self.lab = LabDir(config.lab_dir)

    @classmethod
    def attach(cls, lab_dir: Path) -> Backend:
        """The lab in `lab_dir`, for status/down/logs/chaos: needs no valid settings beyond the directory
        (a bad LABKIT_MODEL_PORT must not keep `labkit down` from stopping a running lab)."""
        return cls(LabConfig.model_construct(lab_dir=lab_dir, backend=cls.name))

    # ---- what a backend implements -----------------------------------------------------------------
    @abstractmethod
    def is_running(self) -> bool:
        """Whether this lab's manager (the supervisor, the agent container) is alive."""

    @abstractmethod
    def logs(self, service: ServiceName, lines: int = 100) -> str:
        """The last `lines` lines of a service's log."""

    @abstractmethod
    def log_lines(self, service: ServiceName) -> Iterator[str]:
        """Every line the lab still keeps of a service's log (within its rotation bound), oldest first."""

    @abstractmethod
    def log_source(self, service: str) -> str:
        """Where `logs(service)` reads from, for error messages."""

    @abstractmethod
    def _preflight(self) -> None:
        """This backend's own checks before anything starts (binaries, images, the model file)."""

    @abstractmethod
    def _start(self, lab_id: str, say: Callable[[str], None]) -> Callable[[], str | None]:
        """Start the lab's manager and services; return a check that says why the manager is gone, or None."""

    @abstractmethod
    def _teardown(self, lab_id: str) -> int:
        """Stop everything of lab `lab_id`, even after its manager died; how many processes or containers."""

    def _sweep_stale(self) -> None:
        """A previous lab in this directory whose manager died: stop what it left before starting anew."""
        saved = self._saved()
        if saved is not None and not self.is_running():
            self._teardown(saved["lab_id"])

    # ---- up and down -------------------------------------------------------------------------------
    def up(
        self, *, progress: Callable[[str], None] | None = None, wait_scraped: bool = True
    ) -> list[ServiceStatus]:
        """Start every service and return once all are ready — with `wait_scraped` (the default) also once
        Prometheus has scraped each of them (see `wait_scraped`); on failure nothing is left running."""
        say = progress or (lambda _msg: None)
        with self._exclusive("up"):
            self._refuse_if_running()
            self._sweep_stale()
            self.preflight()
            lab_id = self._prepare_lab_dir()
            say(f"starting the lab in {self.lab.root} (engine {self.config.engine}, backend {self.name})")
            try:
                manager_gone = self._start(lab_id, say)
                return self._wait_ready(say, manager_gone, wait_scraped=wait_scraped)
            except BaseException:
                self._teardown(lab_id)
                self._mark_stopped()
                raise

    def down(self) -> int:
        """Stop the lab; how many processes or containers were stopped (0: nothing was running)."""
        saved = self._saved()
        if saved is None:
            return 0
        with self._exclusive("down"):
            stopped = self._teardown(saved["lab_id"])
            self._mark_stopped()
            return stopped

    def preflight(self) -> None:
        """Everything that can be checked before a single process or container starts."""
        self._refuse_if_running()
        self._preflight()
        self.config.wrapper_auth_headers()  # an unreadable or empty API key file fails here, before any start
        self.config.upstream_auth_headers()  # and so does the upstream's
        self._check_retention()
        self._check_ports_free()

    def _check_retention(self) -> None:
        """Prometheus keeps every sample the lab's SLO alerts read: with a shorter retention their long
        windows would hold less than they say, and pages would fire (or not) on a window nobody chose."""
        from labkit.measure.slo.rules import recorded_windows  # pandas: see _prepare_lab_dir

        retention = self.config.prometheus_retention_time
        longest = recorded_windows("lab")[-1]
        if prometheus_duration_s(retention) < prometheus_duration_s(longest):
            default = LabConfig.model_fields["prometheus_retention_time"].default
            raise ConfigError(
                f"--prometheus-retention-time {retention} is shorter than the {longest} window the lab's SLO "
                f"alerts read; give at least {longest} (the default is {default})"
            )

    def _mark_stopped(self) -> None:
        """After `down`: the state file says the lab and its services are stopped; no copy of the API key
        outlives the lab."""
        self.lab.api_key_copy.unlink(missing_ok=True)
        self.lab.upstream_api_key_copy.unlink(missing_ok=True)
        state = self.lab.read_state()
        if state is not None and state.get("running"):
            state["running"] = False
            state["supervisor_pid"] = None
            for svc in state.get("services", []):
                if svc.get("state") != "external":
                    svc.update(state="stopped", pid=None)
            self.lab.write_state(state)

    def stopped_by_down(self) -> bool:
        """Whether `labkit down` stopped this lab (state.json says `running: false`): nothing of it runs, so
        status, up and run need nothing of its engine."""
        state = self.lab.read_state()
        return state is not None and state.get("running") is False

    def _check_ports_free(self) -> None:
        """Every port the lab will listen on is free now (the model's only when the lab runs it)."""
        for service, port, flag in lab_ports(self.config):
            if not port_is_free(self.config.host, port):
                raise PortInUseError(service, port, flag)

    def _refuse_if_running(self) -> None:
        """A lab of either backend already running in this directory: starting another would orphan it. A lab
        of this backend is asked; one of the other backend counts as running until `labkit down` marked it
        stopped (its containers may come back with the engine: a new lab here would orphan them)."""
        saved_backend = saved_backend_name(self.lab.root)
        if saved_backend == self.name:
            running = self.is_running()
        else:
            state = self.lab.read_state()
            running = state is not None and bool(state.get("running"))
        if running:
            raise LabAlreadyRunningError(
                f"a lab is already running in {self.lab.root} (backend {saved_backend}); see "
                "`labkit status`, or stop it with `labkit down` first (or pass another --lab-dir and ports)"
            )

    def _prepare_lab_dir(self) -> str:
        """A fresh lab in the lab directory: id, token, saved settings, rules and Prometheus config."""
        self.lab.prepare()
        # One lab, one TSDB and one set of logs: series and log tails of an earlier lab in the same
        # directory would blend into this one's (a restart counter's last value, an old error line).
        # Within a lab, Prometheus' data survives Prometheus restarts.
        shutil.rmtree(self.lab.prometheus_dir / "data", ignore_errors=True)
        for old_log in self.lab.logs.glob("*.log*"):  # rotated ones too (name.log.1, ...)
            old_log.unlink()
        lab_id = uuid.uuid4().hex
        self.lab.new_token()
        # Imported here: the SLO engine pulls in pandas, which `status` and `down` never need.
        from labkit.measure.slo.rules import alert_profile_record, write_rules_file

        # The lab's Prometheus alerts with the lab profile (windows / LAB_WINDOW_DIVISOR) so that a
        # minute-long fault can page; lab.json records it for runs and reports.
        write_atomically(
            self.lab.config_file,
            json.dumps(
                {
                    "lab_id": lab_id,
                    "backend": self.name,
                    **self._saved_extras(),
                    "created_at": time.time(),
                    "alert_profile": alert_profile_record("lab"),
                    "config": json.loads(self.config.model_dump_json()),
                },
                indent=2,
            ),
        )
        self.lab.state_file.unlink(missing_ok=True)
        write_rules_file(self.lab.rules_dir, profile="lab")
        write_atomically(
            self.lab.prometheus_dir / "prometheus.yml",
            render_prometheus_config(self.config, lab_id=lab_id, rules_dir=self._prometheus_rules_dir()),
        )
        # Alertmanager notifies the manager's receiver with the lab's token; the lab's notifications start
        # empty with the lab, like its TSDB.
        write_atomically(
            self.lab.alertmanager_dir / "alertmanager.yml",
            render_alertmanager_config(
                webhook_url=self.config.exporter_url + ALERTS_WEBHOOK_ROUTE,
                token_file=self._services_lab().token_file,
            ),
        )
        self.lab.alerts_file.unlink(missing_ok=True)
        return lab_id

    def _prometheus_rules_dir(self) -> Path:
        """The rules folder as Prometheus sees it (in a container, not the host's path)."""
        return self._services_lab().rules_dir

    def _services_lab(self) -> LabDir:
        """The lab directory as the services see it (in a container, not the host's path)."""
        return self.lab

    def _saved_extras(self) -> dict[str, Any]:
        """What else this backend keeps in config.json (the Docker engine's address)."""
        return {}

    # ---- the lab directory -----------------------------------------------------------------------------
    def _saved(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.lab.config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(
                f"cannot read the lab directory {self.lab.root} ({exc.strerror}); "
                "pass --lab-dir (or LABKIT_LAB_DIR) with a directory you can write"
            ) from exc
        except ValueError as exc:
            raise BackendError(
                f"{self.lab.config_file} is not valid JSON ({exc}); "
                "remove the lab directory or pass another --lab-dir"
            ) from exc
        return data if isinstance(data, dict) else None

    def saved_config(self) -> LabConfig:
        """The configuration the running lab was started with (its ports, engine, model)."""
        saved = self._saved()
        if saved is None or not self.is_running():
            raise LabNotRunningError(f"no lab is running in {self.lab.root}; start one with `labkit up`")
        return LabConfig(**saved["config"])

    def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the lab manager's control API (behind the lab's token); its JSON answer, or BackendError."""
        url = self.saved_config().exporter_url + path  # LabNotRunningError when no lab runs
        headers = {"Authorization": f"Bearer {self.lab.read_token()}"}
        try:
            # trust_env=False: an HTTP_PROXY from the environment would otherwise receive the lab's token.
            response = httpx.request(
                method, url, headers=headers, timeout=CONTROL_TIMEOUT_S, trust_env=False, **kwargs
            )
        except httpx.HTTPError as exc:
            raise BackendError(
                f"the lab's {self.manager_name} at {url} does not answer ({exc}); "
                "try `labkit down` and `labkit up`"
            ) from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise BackendError(f"the {self.manager_name} refused {method} {path}: {message}")
        return response.json()

    # ---- the control API ---------------------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        return [ServiceStatus(**item) for item in self._control("GET", STATUS_ROUTE)]

    def _act(self, service: ServiceName, action: ServiceAction, body: dict[str, Any] | None = None) -> None:
        self._control("POST", service_action_route(service, action), json=body)

    def kill(self, service: ServiceName) -> None:
        """SIGKILL the service's main process: a crash, which the restart policy answers and counts."""
        self._act(service, "kill")

    def restart(self, service: ServiceName, *, remediation_reason: str | None = None) -> None:
        """Graceful restart, counted in lab_service_restarts_total; with `remediation_reason` also in
        lab_remediation_actions_total{action="restart",target,reason}."""
        self._act(
            service, "restart", {"remediation_reason": remediation_reason} if remediation_reason else None
        )

    def pause(self, service: ServiceName, duration_s: float) -> None:
        """Freeze the service; the manager resumes it after `duration_s` (its TTL) if nobody did before."""
        self._act(service, "pause", {"duration_s": duration_s})

    def unpause(self, service: ServiceName) -> None:
        self._act(service, "unpause")

    def start_stress(self, workers: int, duration_s: float) -> dict[str, Any]:
        """The cpu_stress fault: stress-ng run by the manager, ended by its own --timeout and the manager."""
        answer: dict[str, Any] = self._control(
            "POST", STRESS_ROUTE, json={"workers": workers, "duration_s": duration_s}
        )
        return answer

    def stop_stress(self) -> bool:
        """End the cpu_stress fault (idempotent); whether one was running."""
        return bool(self._control("DELETE", STRESS_ROUTE).get("stopped"))

    def alert_notifications(self, since: int = 0) -> tuple[list[AlertNotification], int]:
        """The Alertmanager notifications the lab received, from the `since`-th on (one per alert per
        notification, in arrival order), and the index to ask for next time."""
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ConfigError(f"since must be a whole number of notifications, 0 or more, not {since!r}")
        answer = self._control("GET", ALERTS_ROUTE, params={"since": since})
        try:
            notifications = [AlertNotification(**item) for item in answer["notifications"]]
            return notifications, int(answer["next"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendError(
                f"the {self.manager_name} answered GET {ALERTS_ROUTE} with something else than its "
                f"notifications ({exc}); is the lab older than this labkit? restart it with `labkit down` "
                "and `labkit up`"
            ) from exc

    def _wait_ready(
        self,
        say: Callable[[str], None],
        manager_gone: Callable[[], str | None],
        *,
        wait_scraped: bool = True,
    ) -> list[ServiceStatus]:
        """Follow the state the lab's manager writes until every service is ready (Prometheus' own
        readiness included) and, with `wait_scraped`, until Prometheus has scraped them all.
        `manager_gone` returns why the manager (supervisor or agent) is gone, or None."""
        deadline = time.monotonic() + self.config.ready_timeout_s
        seen: dict[str, str] = {}
        while True:
            gone = manager_gone()
            if gone is not None:
                raise ServiceStartError(gone)
            state = self.lab.read_state() or {}
            services = state.get("services", [])
            details = state.get("details", {})
            for svc in services:
                if seen.get(svc["name"]) != svc["state"]:
                    seen[svc["name"]] = svc["state"]
                    say(f"  {svc['name']:<12} {svc['state']}")
            failed = [s for s in services if s["state"] == "failed"]
            if failed:
                name = failed[0]["name"]
                raise ServiceStartError(
                    f"service {name} failed to start: {details.get(name, '')}\n"
                    f"last lines of {self.log_source(name)}:\n{self.logs(name, 20)}"  # type: ignore[arg-type]
                )
            if len(services) == len(SERVICE_NAMES) and all(
                s["state"] in ("ready", "external") for s in services
            ):
                break
            if time.monotonic() > deadline:
                waiting = [s["name"] for s in services if s["state"] not in ("ready", "external")]
                hints = "; ".join(f"{n}: {details[n]}" for n in waiting if details.get(n))
                name = waiting[0] if waiting else self.manager_service
                raise ServiceStartError(
                    f"not ready after {self.config.ready_timeout_s:g}s: {', '.join(waiting) or 'all'}"
                    f"{' (' + hints + ')' if hints else ''}; the lab was stopped again.\n"
                    f"last lines of {self.log_source(name)}:\n{self.logs(name, 20)}"  # type: ignore[arg-type]
                )
            time.sleep(0.1)
        if wait_scraped:
            try:
                self.wait_scraped(say=say)
            except BackendError as exc:
                raise ServiceStartError(
                    f"{exc}\nThe lab was stopped again. Last lines of {self.log_source('prometheus')}:\n"
                    f"{self.logs('prometheus', 20)}"
                ) from exc
        return [ServiceStatus(**s) for s in services]

    # ---- Prometheus' first scrape ------------------------------------------------------------------
    def _lab_config(self) -> LabConfig:
        """The settings of the lab in the lab directory (an attached backend holds only the directory)."""
        saved = self._saved()
        return LabConfig(**saved["config"]) if saved is not None else self.config

    def prometheus_unscraped_targets(self) -> dict[str, str]:
        """The lab's scrape targets (job names) whose last scrape did not answer or that Prometheus has not
        scraped yet, each with why; {} once every target is up. Raises BackendError when Prometheus does
        not answer."""
        cfg = self._lab_config()
        url = f"{cfg.prometheus_url}/api/v1/targets?state=active"
        try:
            # trust_env=False: a proxy from the environment must never sit between the lab and itself.
            response = httpx.get(url, timeout=2.0, trust_env=False)
            response.raise_for_status()
            active = response.json()["data"]["activeTargets"]
            health = {t["labels"]["job"]: (t.get("health"), t.get("lastError") or "") for t in active}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"Prometheus at {url} does not answer ({type(exc).__name__}: {exc})") from exc
        unscraped: dict[str, str] = {}
        for job in scrape_jobs(cfg):
            state, error = health.get(job.name, (None, ""))
            if state == "up":
                continue
            if state == "down":
                unscraped[job.name] = f"down: {error}" if error else "down"
            else:  # not applied as a target, or not scraped, yet: Prometheus does both on 5 s ticks
                unscraped[job.name] = "not scraped yet"
        return unscraped

    def wait_scraped(
        self,
        *,
        timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """Return once Prometheus has scraped every target of the lab and each answered (health "up"); at once
        when that is already so. Everything that measures through Prometheus waits for this before its
        window starts: until the first scrape a query finds no series at all, and a counter that grows
        before it (a kill right after `up`) is invisible to increase(), which needs a sample before the
        change. Prometheus 2.42 scrapes a fresh lab's targets 5-6 s after it starts.

        Raises BackendError naming the targets that are not up after `timeout_s` seconds."""
        if not 0 <= timeout_s <= _MAX_SCRAPE_TIMEOUT_S:
            raise ConfigError(f"timeout_s must be between 0 and {_MAX_SCRAPE_TIMEOUT_S:g}, got {timeout_s!r}")
        say = say or (lambda _msg: None)
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                unscraped = self.prometheus_unscraped_targets()
            except BackendError as exc:
                unscraped, unanswered = {}, str(exc)
            else:
                unanswered = ""
                if not unscraped:
                    if announced:
                        say("  prometheus has scraped every service")
                    return
            if time.monotonic() >= deadline:
                why = unanswered or describe_unscraped(unscraped)
                raise BackendError(
                    f"Prometheus has not scraped every service of the lab in {self.lab.root} within "
                    f"{timeout_s:g} s ({why}); see `labkit logs prometheus` (and `labkit logs SERVICE` of "
                    "a service that is down), or try again with a longer timeout"
                )
            if not announced:
                say("  waiting for Prometheus' first scrape of every service (it adds targets every 5 s)")
                announced = True
            time.sleep(0.1)

    @contextmanager
    def _exclusive(self, action: str) -> Iterator[None]:
        """One `up` or `down` at a time per lab directory (a second one would sweep the first's lab)."""
        try:
            self.lab.root.mkdir(parents=True, exist_ok=True)
            handle = open(self.lab.lock_file, "w")  # noqa: SIM115 - held for the whole action
        except OSError as exc:
            raise BackendError(
                f"cannot use the lab directory {self.lab.root} ({exc.strerror}); "
                "pass --lab-dir (or LABKIT_LAB_DIR) with a directory you can write"
            ) from exc
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise BackendError(
                    f"another `labkit up` or `labkit down` is working on {self.lab.root}; "
                    f"wait for it to finish, then run `labkit {action}` again"
                ) from exc
            yield


def describe_unscraped(unscraped: dict[str, str]) -> str:
    """`prometheus_unscraped_targets()` in words: "model, wrapper not scraped yet; exporter down: ..."."""
    by_reason: dict[str, list[str]] = {}
    for job, reason in unscraped.items():
        by_reason.setdefault(reason, []).append(job)
    return "; ".join(f"{', '.join(jobs)} {reason}" for reason, jobs in by_reason.items())
