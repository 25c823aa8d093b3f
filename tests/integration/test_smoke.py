"""`labkit smoke` against a real lab: requests succeed and Prometheus agrees with the wrapper's count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.errors import LabkitError
from labkit.lab.local import LocalBackend
from labkit.measure.smoke import run_smoke

pytestmark = pytest.mark.integration


def test_smoke_run_is_counted_by_prometheus_and_written(running_lab: LocalBackend, tmp_path: Path) -> None:
    result = run_smoke(running_lab.config, out_dir=tmp_path, requests=3, max_tokens=5)
    assert result.succeeded == 3
    assert all(r.output_tokens == 5 and r.time_to_first_token_s is not None for r in result.requests)
    assert result.prometheus["requests_counted_by_wrapper"] == 3
    assert result.prometheus["requests_counted_by_prometheus"] == 3
    assert result.prometheus["services_up"] == 5  # model, wrapper, alertmanager, prometheus, exporter
    assert result.prometheus["restarts_total"] == 0
    assert result.prometheus_agrees
    saved = json.loads((result.directory / "smoke.json").read_text())
    assert len(saved["requests"]) == 3 and saved["engine"] == "sim"
    assert "3/3 requests succeeded" in (result.directory / "report.md").read_text()


def test_smoke_refuses_a_request_count_out_of_range(running_lab: LocalBackend, tmp_path: Path) -> None:
    with pytest.raises(LabkitError, match="between 1 and 100"):
        run_smoke(running_lab.config, out_dir=tmp_path, requests=0)
