"""Done when (issue 20): a failed request in a report links to its wrapper and model log lines by request id.

A sim lab, a load while two of the wrapper's faults are on (an error fault that answers 503 before the model
is asked, a stream cut after the model started answering), the failed requests' lines copied from the lab's
logs into the run as a scenario does, and the report's table of that run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from labkit.lab.local import LocalBackend
from labkit.measure.load import LoadSpec, run_load
from labkit.measure.request_logs import save_request_logs
from labkit.report import RunData, failed_requests_table

pytestmark = pytest.mark.integration


def _fault(wrapper: str, token: str, body: dict[str, object]) -> None:
    answer = httpx.post(f"{wrapper}/admin/faults", json=body, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text


def test_a_failed_request_in_the_report_shows_its_wrapper_and_model_lines(
    running_lab: LocalBackend, tmp_path: Path
) -> None:
    wrapper, token = running_lab.config.wrapper_url, running_lab.lab.read_token()
    _fault(wrapper, token, {"kind": "error", "duration_s": 20, "params": {"probability": 0.4, "seed": 3}})
    _fault(wrapper, token, {"kind": "stream_cut", "duration_s": 20, "params": {"after_tokens": 2}})
    try:
        spec = LoadSpec(url=f"{wrapper}/generate", rate=8, duration_s=2, stream=True, max_tokens=6)
        result = run_load(spec, tmp_path / "runs", progress=False)
        frame = result.frame
    finally:
        httpx.delete(f"{wrapper}/admin/faults", headers={"Authorization": f"Bearer {token}"})
    kinds = set(frame.loc[~frame["ok"], "error_kind"])
    assert {"http_5xx", "stream_cut"} <= kinds, frame[["x_request_id", "status", "error_kind"]]
    time.sleep(0.5)  # the supervisor copies each service's output from its pipe as it comes
    run_dir = result.run_dir  # tmp_path also holds the lab's directory: never pick a folder by listing it
    assert save_request_logs(run_dir, frame, running_lab.log_lines) > 0

    report_table = failed_requests_table(RunData.load(run_dir.path))
    table = report_table.set_index("request id")
    shown = frame[frame["x_request_id"].isin(table.index)]  # a sample of each kind (all of them here)
    cut = shown[shown["error_kind"] == "stream_cut"]["x_request_id"].iloc[0]
    refused = shown[shown["error_kind"] == "http_5xx"]["x_request_id"].iloc[0]
    # The cut stream: the wrapper's line says it failed after its 200; the model server's line has the id.
    assert "POST /generate 200 (counted 502)" in table.loc[cut, "wrapper log"]
    assert "fault_stream_cut" in table.loc[cut, "wrapper log"]
    assert "POST /api/generate 200" in table.loc[cut, "model log"]
    # The error fault: answered by the wrapper alone, so the model's log has no line with its id.
    assert "POST /generate 503" in table.loc[refused, "wrapper log"]
    assert table.loc[refused, "model log"] == "no line with this id"
    html = report_table.to_html_for_people()
    assert cut in html and refused in html

    # Every line the lab's wrapper and model server wrote is one JSON object with the lab's fields.
    for service in ("wrapper", "model"):
        lines = [json.loads(line) for line in running_lab.log_lines(service)]  # type: ignore[arg-type]
        assert lines and all({"time", "level", "service", "logger", "message"} <= set(line) for line in lines)
