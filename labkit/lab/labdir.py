"""The local lab directory: where a lab keeps its config, token, state, logs and Prometheus data.

Files are written atomically (temp file + rename) so that a reader never sees half a file.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.atomic import write_atomically

__all__ = ["LabDir"]


@dataclass(frozen=True)
class LabDir:
    """Paths inside one lab directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def api_key_copy(self) -> Path:
        """The Docker backend's copy of the wrapper's API key (a host path is not visible in a container)."""
        return self.root / "api_key"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    @property
    def rules_dir(self) -> Path:
        return self.prometheus_dir / "rules"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def prepare(self) -> None:
        for folder in (self.root, self.logs, self.prometheus_dir, self.rules_dir):
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
        try:
            text = self.log_file(name).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
