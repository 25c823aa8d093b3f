"""The generated files of `stack/docker-compose.yml`: Prometheus' configuration (targets by compose service
name) and the SLO rules, from the same template and spec as a local lab's, so the two cannot drift apart.

`python -m generators.compose` rewrites them; `--check` exits 1 when a committed file is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from labkit.config import LabConfig, stack_dir
from labkit.lab.prometheus_config import ScrapeJob, render_scrape_config
from labkit.measure.slo.rules import RULES_FILE_NAME, rules_yaml

__all__ = [
    "COMPOSE_LAB_ID",
    "COMPOSE_PORTS",
    "COMPOSE_RULES_DIR",
    "COMPOSE_SCRAPE_INTERVAL_S",
    "compose_files",
    "compose_prometheus_config",
    "compose_scrape_jobs",
    "main",
    "stale_compose_files",
    "write_compose_files",
]

# The value of the `io.labkit.lab` label on every compose container and of Prometheus' `lab` label.
COMPOSE_LAB_ID = "compose"
# Each service's port inside compose's network (the compose file publishes the same ports on 127.0.0.1).
COMPOSE_PORTS: dict[str, int] = {"model": 11434, "wrapper": 8000, "exporter": 9101, "prometheus": 9090}
# Where the compose file mounts stack/prometheus/compose/rules/ in the Prometheus container.
COMPOSE_RULES_DIR = "/etc/prometheus/rules"
# The lab's default, not the environment's: a LABKIT_SCRAPE_INTERVAL_S in the shell must not change
# a committed file.
COMPOSE_SCRAPE_INTERVAL_S: float = LabConfig.model_fields["scrape_interval_s"].default


def compose_scrape_jobs() -> list[ScrapeJob]:
    """One job per service with `/metrics`, addressed by its compose service name."""
    return [ScrapeJob(name, f"{name}:{port}") for name, port in COMPOSE_PORTS.items()]


def compose_prometheus_config() -> str:
    """`stack/prometheus/compose/prometheus.yml`."""
    return render_scrape_config(
        compose_scrape_jobs(),
        scrape_interval_s=COMPOSE_SCRAPE_INTERVAL_S,
        lab_id=COMPOSE_LAB_ID,
        rules_dir=COMPOSE_RULES_DIR,
    )


def compose_files() -> dict[str, str]:
    """Every generated file of the compose stack: path relative to `stack/` -> content."""
    return {
        "prometheus/compose/prometheus.yml": compose_prometheus_config(),
        f"prometheus/compose/rules/{RULES_FILE_NAME}": rules_yaml(profile="lab"),  # as `labkit up` loads
    }


def stale_compose_files(stack: Path | None = None) -> list[Path]:
    """The generated files under `stack` (default: labkit's stack/) that differ from what the code makes."""
    root = stack or stack_dir()
    stale = []
    for relative, text in compose_files().items():
        path = root / relative
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(path)
    return stale


def write_compose_files(stack: Path | None = None) -> list[Path]:
    """Write every generated file under `stack` (default: labkit's stack/); return their paths."""
    root = stack or stack_dir()
    written = []
    for relative, text in compose_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m generators.compose",
        description="Regenerate the compose stack's Prometheus configuration and SLO rules under stack/.",
    )
    parser.add_argument("--stack-dir", type=Path, help="the stack/ folder to write into (default: labkit's)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 and name the files that are stale"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_compose_files(args.stack_dir)
        for path in stale:
            sys.stderr.write(f"stale: {path} (regenerate with python -m generators.compose)\n")
        return 1 if stale else 0
    for path in write_compose_files(args.stack_dir):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
