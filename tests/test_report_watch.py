"""`labkit watch`'s picture from hand-made readings (what a reading holds is the lab's own answer, which
tests/integration/test_live_view.py reads from a real sim lab), its sparklines, and a reading of a lab
whose control API and Prometheus do not answer: said in the reading, never raised."""

from __future__ import annotations

import io
from typing import cast

from rich.console import Console

from labkit.errors import BackendError
from labkit.lab.backend import Backend
from labkit.lab.contract import ServiceStatus
from labkit.measure.prom import PrometheusClient
from labkit.report.watch import LabReading, LabWatch, read_lab, sparkline
from tests.conftest import free_ports


def service(name: str, state: str, restarts: int) -> ServiceStatus:
    return ServiceStatus.model_validate(
        {"name": name, "state": state, "pid": 100, "restarts": restarts, "url": f"http://127.0.0.1/{name}"}
    )


def text_of(view: LabWatch) -> str:
    console = Console(file=io.StringIO(), width=120, record=True, color_system=None)
    console.print(view.render())
    return console.export_text()


def test_sparklines_span_the_smallest_to_the_largest_and_leave_gaps() -> None:
    assert sparkline([0.0, 1.0, None, 0.5]) == "▁█ ▅"
    assert sparkline([2.0, 2.0]) == "▁▁" and sparkline([None, None]) == "  "


def test_a_frame_shows_services_traffic_faults_and_alerts() -> None:
    view = LabWatch(title="lab /tmp/lab (sim, local)")
    quiet = {"rate": None, "p95": None, "errors": None, "in_flight": None}
    view.add(LabReading(at=0.0, services=[service("model", "ready", 0)], signals=quiet))
    view.add(
        LabReading(
            at=2.0,
            services=[service("model", "starting", 1), service("wrapper", "paused", 0)],
            signals={"rate": 4.0, "p95": 0.25, "errors": 12.5, "in_flight": 3.0},
            faults=["latency (wrapper)", "wrapper paused"],
            alerts=["SloErrorBudgetBurnPage (page)"],
        )
    )
    text = text_of(view)
    assert "lab /tmp/lab (sim, local)" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") >= 3}
    assert "starting" in lines["model"] and " 1 " in lines["model"] and "paused" in lines["wrapper"]
    assert "4.00/s" in lines["requests/s"] and "250 ms" in lines["p95 latency"]
    assert "12.5 %" in lines["5xx share"] and " 3 " in lines["in flight"]
    assert "last 2 readings" in text
    assert "active faults: latency (wrapper), wrapper paused" in text
    assert "firing alerts: SloErrorBudgetBurnPage (page)" in text


class Unanswering:
    """A lab whose manager does not answer (a real one that has died gives this same BackendError)."""

    def status(self) -> list[ServiceStatus]:
        raise BackendError("the lab's supervisor at http://127.0.0.1:1 does not answer")


def test_a_lab_that_does_not_answer_is_said_not_raised() -> None:
    (port,) = free_ports(1)  # nothing listens there
    with PrometheusClient(f"http://127.0.0.1:{port}", timeout_s=1.0) as prometheus:
        reading = read_lab(cast(Backend, Unanswering()), prometheus, clock=lambda: 5.0)
    assert reading.at == 5.0 and reading.services is None
    assert "does not answer" in (reading.services_error or "")
    assert reading.prometheus_error and reading.signals == {}
    view = LabWatch(title="lab")
    view.add(reading)
    text = text_of(view)
    assert "services: the lab's supervisor" in text and "prometheus: " in text
    assert "active faults: none" in text
