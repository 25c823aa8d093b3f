"""The load generator against a real lab (sim engine): 30 s of open-loop load, every request one row,
the rate held, and the client's availability equal to the wrapper's own count of the same requests.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from labkit.lab.local import LocalBackend
from labkit.measure.load import LoadSpec, load_requests_frame, run_load, schedule

pytestmark = pytest.mark.integration


def _generate_requests_by_status(wrapper: str) -> dict[str, float]:
    """`llm_requests_total{endpoint="/generate"}` per status code, from the wrapper's own /metrics."""
    text = httpx.get(f"{wrapper}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "llm_requests_total" and sample.labels.get("endpoint") == "/generate":
                code = sample.labels["status_code"]
                counts[code] = counts.get(code, 0.0) + sample.value
    return counts


def test_thirty_seconds_of_open_loop_load_are_recorded_and_agree_with_the_server(
    running_lab: LocalBackend, tmp_path: Path
) -> None:
    cfg = running_lab.config
    wrapper = f"http://{cfg.host}:{cfg.wrapper_port}"
    spec = LoadSpec(url=wrapper, rate=10, duration_s=30, stream=True, max_tokens=8, seed=1, timeout_s=10)
    before = _generate_requests_by_status(wrapper)

    result = run_load(spec, tmp_path, progress=False)

    after = _generate_requests_by_status(wrapper)
    frame = result.frame
    # Every scheduled request is exactly one row, in the result and in the file.
    assert len(frame) == result.scheduled == len(schedule(spec)) == 300
    assert frame["request_id"].tolist() == list(range(300))
    assert len(load_requests_frame(result.run_dir)) == 300
    # The rate the client held, measured from its actual send times.
    assert result.achieved_rate == pytest.approx(10, rel=0.02)
    assert frame["ok"].all(), frame[~frame["ok"]][["request_id", "error_kind", "error"]]
    assert (frame["output_tokens"] == 8).all() and frame["ttft_s"].notna().all()
    # Timing consistency, not absolute numbers: the client sees at least what the server measured.
    assert (frame["ttft_s"] <= frame["e2e_s"]).all()
    assert (frame["e2e_s"] >= frame["server_duration_s"]).all()
    # The client's availability is the server's ratio for the same window, over the same requests.
    delta = {code: after.get(code, 0.0) - before.get(code, 0.0) for code in after}
    served = sum(delta.values())
    assert served == len(frame)
    assert delta.get("200", 0.0) / served == result.availability == 1.0
