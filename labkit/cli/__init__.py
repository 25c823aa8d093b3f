"""The `labkit` command line: bring the lab up, look at it, load it, break it, run scenarios, render reports.

Every failure prints one `error:` line that says what to do, and exits non-zero. The subcommands' heavy
modules (pandas, papermill, the chaos engine) are imported where they are used: `labkit up`, `down` and
`status` start in a fraction of the time (measured in docs/benchmarks.md).
"""

from __future__ import annotations

from labkit.cli import chaos, doctor, lab, measure, reports, runs
from labkit.cli._base import cli

__all__ = ["chaos", "cli", "doctor", "lab", "main", "measure", "reports", "runs"]


def main() -> None:
    cli(prog_name="labkit")
