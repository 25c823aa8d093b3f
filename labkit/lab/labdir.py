"""The local lab directory: where a lab keeps its config, token, state, logs and Prometheus data.

Files are written atomically (temp file + rename) so that a reader never sees half a file.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomically
from labkit.rundir import RunFile

__all__ = ["LabDir"]


class _InLab:
    """A path inside the lab directory, read as an attribute of a LabDir (`lab.config_file`)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, lab: LabDir, owner: type[LabDir] | None = None) -> Path:
        return lab.root.joinpath(*self.parts)


@dataclass(frozen=True)
class LabDir:
    """Paths inside one lab directory, each declared once."""

    root: Path

    config_file = _InLab("config.json")  # lab id, backend, the settings it was started with
    state_file = _InLab("state.json")  # what the lab's manager writes: running, services, their states
    token_file = _InLab("token")  # the control and fault APIs' token (0600)
    api_key_copy = _InLab("api_key")  # docker: the wrapper's API key (a host path is not visible inside)
    upstream_api_key_copy = _InLab("upstream_api_key")  # docker: the key the wrapper sends to --openai-url
    lock_file = _InLab(".lock")  # held by `up` and `down`
    logs = _InLab("logs")
    prometheus_dir = _InLab("prometheus")  # prometheus.yml and the TSDB (data/)
    rules_dir = _InLab("prometheus", "rules")
    alertmanager_dir = _InLab("alertmanager")  # alertmanager.yml and its state (data/: silences, log)
    # Every notification the lab's receiver got: the same lines as a run's alerts.jsonl (AlertNotification).
    alerts_file = _InLab(str(RunFile.ALERTS))
    ollama_dir = _InLab("ollama")  # docker, engine ollama: the Ollama container's models

    @classmethod
    def entries(cls) -> frozenset[str]:
        """The names a lab directory holds at its top (and nothing else)."""
        return frozenset(d.parts[0] for d in vars(cls).values() if isinstance(d, _InLab))

    def log_file(self, name: str) -> Path:
        """A service's log as it is written now; rotated files are beside it (`log_files`)."""
        return self.logs / f"{name}.log"

    def log_files(self, name: str) -> list[Path]:
        """A service's log files that exist, oldest first: `name.log.<n>` ... `name.log.1`, then `name.log`
        (the manager rotates them, labkit.lab.manager.log_files)."""
        current = self.log_file(name)
        rotated = []
        for path in current.parent.glob(f"{current.name}.*"):
            suffix = path.name[len(current.name) + 1 :]
            if suffix.isdigit():
                rotated.append((int(suffix), path))
        found = [path for _, path in sorted(rotated, reverse=True)]
        return [*found, current] if current.exists() else found

    def read_log_lines(self, name: str) -> Iterator[str]:
        """Every line a service's log still holds, oldest first, across its rotated files. A file rotated
        away while it is read is skipped."""
        for path in self.log_files(name):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        yield line.rstrip("\n")
            except FileNotFoundError:
                continue

    def prepare(self) -> None:
        for folder in (
            self.root,
            self.logs,
            self.prometheus_dir,
            self.rules_dir,
            self.alertmanager_dir / "data",
        ):
            folder.mkdir(parents=True, exist_ok=True)

    def new_token(self) -> str:
        """A fresh per-lab secret, stored readable by the owner only (0600)."""
        token = secrets.token_urlsafe(32)
        write_atomically(self.token_file, token, mode=0o600)
        return token

    def read_token(self) -> str:
        return self.token_file.read_text(encoding="utf-8").strip()

    def read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def write_state(self, state: dict[str, Any]) -> None:
        write_atomically(self.state_file, json.dumps(state, indent=2, sort_keys=True))

    def tail_log(self, name: str, lines: int = 20) -> str:
        """The last `lines` lines of a service's log, from the rotated files too when the current one, just
        rotated, holds fewer."""
        kept: list[str] = []
        for path in reversed(self.log_files(name)):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            kept = text.splitlines()[-(lines - len(kept)) :] + kept
            if len(kept) >= lines:
                break
        return "\n".join(kept)
