"""`make lab`'s JupyterLab, started as `make lab` starts it (labkit.runner.jupyter_lab), then opened as an
attendee would: the REST API answers only with the printed token, lists the workshop notebooks and the
`labkit` kernel, the server listens on 127.0.0.1 only, and headless Chromium shows a workshop notebook open
on that kernel. As root (CI, a fresh VM) this is also the check that `--allow-root` is passed."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKSHOP = sorted(p.name for p in (ROOT / "notebooks" / "workshop").glob("W*.ipynb"))


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """JupyterLab on a free port, in its own Jupyter folders: (base URL, token, pid); stopped after."""
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip("JupyterLab is not installed (the notebook extra: `make lab` or `make test` installs it)")
    # A copy of the notebooks: JupyterLab writes a checkpoint next to a notebook it opens.
    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    port = free_port()
    env = os.environ | {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "LABKIT_OUT_DIR": str(tmp_path / "runs"),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "jupyter.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "labkit.runner.jupyter_lab", "--port", str(port),
         "--notebook-dir", str(notebooks), "--lab-dir", str(tmp_path / "lab")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        base, token = f"http://127.0.0.1:{port}", ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            text = (tmp_path / "jupyter.log").read_text()
            found = re.search(r"JupyterLab: open (\S+)/lab\?token=(\S+)", text)
            if found and _answers(base):
                assert found.group(1) == base
                token = found.group(2)
                break
            time.sleep(0.5)
        assert token, (
            f"JupyterLab did not start (rc {proc.poll()}):\n{(tmp_path / 'jupyter.log').read_text()[-3000:]}"
        )
        yield base, token, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/status", timeout=2).status_code in (200, 403)
    except httpx.HTTPError:
        return False


def test_make_lab_serves_the_workshop_on_the_labkit_kernel(jupyter_lab: tuple[str, str, int]) -> None:
    base, token, pid = jupyter_lab
    assert len(WORKSHOP) >= 2, WORKSHOP
    # No token, no notebooks: the server is not password-less.
    assert httpx.get(f"{base}/api/contents/workshop", timeout=10).status_code == 403
    auth = {"Authorization": f"token {token}"}
    listing = httpx.get(f"{base}/api/contents/workshop", headers=auth, timeout=10).json()
    assert set(WORKSHOP) <= {item["name"] for item in listing["content"]}, listing
    kernels = httpx.get(f"{base}/api/kernelspecs", headers=auth, timeout=10).json()["kernelspecs"]
    assert "labkit" in kernels, sorted(kernels)
    # Loopback only, and --allow-root exactly when running as root.
    server = psutil.Process(pid)
    listening = {c.laddr.ip for c in server.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert listening and listening <= {"127.0.0.1"}, listening
    assert ("--allow-root" in server.cmdline()) == (os.geteuid() == 0), server.cmdline()

    chromium = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if chromium is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium)")
    page = f"{base}/lab/tree/workshop/{WORKSHOP[0]}?token={token}"
    shown = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
         "--dump-dom", page],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # The rendered page: JupyterLab's shell, the notebook's tab, and its kernel named in the toolbar.
    assert 'id="jp-main-dock-panel"' in shown.stdout or "jp-LabShell" in shown.stdout, shown.stderr[-2000:]
    assert WORKSHOP[0] in shown.stdout
    assert "Python (labkit)" in shown.stdout, "the notebook did not open on the labkit kernel"
