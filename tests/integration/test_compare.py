"""`labkit compare` on real runs of a sim-engine lab: two runs of the same seed and faults show no regression;
a run with an added latency fault is flagged, and `--fail-on` turns that into exit status 1."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit.chaos import ExperimentLoad, ExperimentSpec, Fault, SteadyState, run_experiment
from labkit.lab.local import LocalBackend
from labkit.report.compare import compare_runs
from tests.conftest import sim_lab_config

pytestmark = pytest.mark.integration

# 12 s at 10 requests/s: 120 requests, enough for a p95 to be compared (5 above it, labkit.report.MIN_TAIL).
METHOD_S = 12.0
KILL = Fault(kind="kill", target="model", start_s=3.0, duration_s=METHOD_S - 3.0)
# 0.4 s added in front of the model from 2 s to the end: every request then takes ~5x the sim's ~0.1 s.
LATENCY = Fault(kind="latency", start_s=2.0, duration_s=METHOD_S - 2.5, params={"delay_s": 0.4})


@pytest.fixture
def sim_lab(tmp_path: Path) -> Iterator[LocalBackend]:
    """The sim engine at its default pace (~0.1 s for 8 tokens), not the tests' faster one."""
    backend = LocalBackend(sim_lab_config(tmp_path, sim_ttft_s=0.04, sim_itl_s=0.009))
    try:
        backend.up()
        yield backend
    finally:
        backend.down()


def _run(lab: LocalBackend, out: Path, faults: list[Fault]) -> Path:
    spec = ExperimentSpec(
        schedule=faults,
        duration_s=METHOD_S,
        load=ExperimentLoad(rate=10, max_tokens=8, seed=7),
        steady_state=SteadyState(enabled=False),
        scenario="compare",
    )
    result = run_experiment(lab.lab.root, spec, out_dir=out, say=None)
    assert result.verdict == "not checked", result.summary()
    return result.run_dir.path


def test_compare_flags_the_latency_regression_and_not_the_noise(
    sim_lab: LocalBackend, tmp_path: Path
) -> None:
    runs = tmp_path / "reports" / "runs"
    first = _run(sim_lab, runs, [KILL])
    again = _run(sim_lab, runs, [KILL])
    slower = _run(sim_lab, runs, [KILL, LATENCY])

    same = compare_runs([first, again])
    assert same.regressions == [], [(d.metric, d.difference, d.low, d.high) for d in same.regressions]

    worse = compare_runs([first, slower])
    flagged = {d.metric for d in worse.regressions}
    assert {"e2e_p50_ms", "e2e_p95_ms"} <= flagged, [(d.metric, d.finding) for d in worse.diffs[slower.name]]
    p95 = next(d for d in worse.diffs[slower.name] if d.metric == "e2e_p95_ms")
    assert p95.low > 0 and p95.difference > 300  # ~400 ms added, and the interval excludes no change

    # The CLI: a page and its JSON, exit 0 under a generous threshold, 1 when the regression exceeds it.
    command = [
        sys.executable,
        "-m",
        "labkit.cli",
        "compare",
        str(first),
        str(slower),
        "--out",
        str(tmp_path / "c"),
    ]
    passing = subprocess.run([*command, "--fail-on", "e2e_p95_ms=5000", "--fail-on", "e2e_p50_ms=5000",
                              "--fail-on", "e2e_p99_ms=5000", "--fail-on", "ttft_p95_ms=5000",
                              "--fail-on", "itl_p95_ms=5000", "--fail-on", "availability_pct=100"],
                             capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert passing.returncode == 0, passing.stdout + passing.stderr
    failing = subprocess.run([*command, "--fail-on", "e2e_p95_ms=100"], capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
    assert failing.returncode == 1, failing.stdout + failing.stderr
    page = Path(failing.stdout.strip().splitlines()[-1].removeprefix("comparison: "))
    assert (
        page.is_file()
        and "regression" in page.read_text()
        and "resampled with replacement" in page.read_text()
    )
    data = json.loads(page.with_suffix(".json").read_text())
    assert data["failed"] is True and data["runs"] == [first.name, slower.name]
