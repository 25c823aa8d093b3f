"""`labkit run kill_and_recover` end to end against a real lab, and its report opened in headless Chromium:
the figures decode, the tables are there, and the run's data shows the kill, one restart and the dip."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.lab.local import LocalBackend
from labkit.report import RunData, availability_figure, client_rolling_availability, restarts_figure

pytestmark = pytest.mark.integration

# Loaded next to the report: reads it through the DOM once it has loaded, and writes what it found.
CHECK_PAGE = """<!doctype html><html><body>
<iframe id="report" src="{src}" style="width:1400px;height:900px"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {{
  const doc = document.getElementById("report").contentDocument;
  const images = [...doc.images];
  const found = {{
    images: images.length,
    decoded: images.filter((i) => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100).length,
    tables: doc.querySelectorAll("table").length,
    rows: doc.querySelectorAll("table tbody tr").length,
    // A pandas index shows as a header cell in each body row (or a blank corner cell): none allowed.
    index_cells: doc.querySelectorAll("tbody th, thead th.blank, thead th.index_name").length,
    without_alt: images.filter((i) => !i.alt || /No description/.test(i.alt)).length,
    alts: images.map((i) => i.alt),
    summary_bottom: doc.querySelector(".labkit-summary")
      ? doc.querySelector(".labkit-summary").getBoundingClientRect().bottom : 1e9,
    scripts_from_network: [...doc.scripts].filter((s) => /^https?:/.test(s.src)).length,
    text: doc.body.innerText,
  }};
  const out = document.createElement("pre");
  out.id = "result";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
}});
</script></body></html>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")


def open_in_chromium(page: Path) -> dict[str, object]:
    result = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    match = re.search(r'<pre id="result">(.*?)</pre>', result.stdout, flags=re.S)
    assert match, f"the check page did not report (rc {result.returncode}): {result.stderr[-2000:]}"
    found: dict[str, object] = json.loads(html.unescape(match.group(1)))
    return found


def test_kill_and_recover_report_renders_in_chromium(running_lab: LocalBackend, tmp_path: Path) -> None:
    runs = tmp_path / "reports" / "runs"
    command = [sys.executable, "-m", "labkit.cli", "--lab-dir", str(running_lab.lab.root), "run",
               "kill_and_recover", "--quick", "-p", "rate", "4",
               "--out", str(runs), "--no-progress"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    report = run_dir / "report.html"
    assert report.is_file() and (tmp_path / "reports" / "index.html").is_file()
    assert "report.html" in (tmp_path / "reports" / "index.html").read_text()

    # The run's data: one kill, the model restarted exactly once, availability dipped and came back. At
    # 4 req/s some request always meets the sim model's restart gap (~0.6 s on an idle machine; at 1 req/s
    # it can fall between two requests).
    run = RunData.load(run_dir)
    assert run.status == "completed" and [f.kind for f in run.fault_windows] == ["kill"]
    # The kill is drawn where it was asked for: kill_at_s on the method's clock (applying it takes < 1 s).
    (kill_at,) = run.faults["start_t_s"]
    assert 6.0 <= kill_at < 7.0, kill_at  # the quick kill_at_s
    restarts = restarts_figure(run)
    model_line = next(line for line in restarts.axes[0].get_lines() if line.get_label() == "model")
    assert max(model_line.get_ydata()) == 1  # type: ignore[type-var]
    availability = client_rolling_availability(run)
    assert availability is not None and availability.min() < 1.0 and availability.iloc[-1] == 1.0
    assert any(str(a.get_gid()).startswith("fault:") for a in availability_figure(run).axes[0].get_children())

    # The report as a person sees it: every figure decodes, the tables are there, nothing from the network.
    page = tmp_path / "check.html"
    page.write_text(CHECK_PAGE.format(src=report.as_uri()))
    found = open_in_chromium(page)
    assert isinstance(found["images"], int) and found["images"] >= 7, found["images"]  # 8 with a GPU
    assert found["decoded"] == found["images"]
    assert isinstance(found["tables"], int) and found["tables"] >= 3
    assert isinstance(found["rows"], int) and found["rows"] >= 5
    assert found["scripts_from_network"] == 0
    assert found["index_cells"] == 0  # no table shows an index column
    assert found["without_alt"] == 0, found["alts"]  # every figure says what it shows
    # The first screen answers what happened, whether the SLOs held and how fast it recovered.
    assert isinstance(found["summary_bottom"], int | float) and found["summary_bottom"] <= 900
    text = str(found["text"])
    for expected in (
        "SLO",
        "Availability",
        "Recovery per fault",
        "kill",
        "GPU",
        "Steady state",
        "recovered in",
    ):
        assert expected in text, expected
