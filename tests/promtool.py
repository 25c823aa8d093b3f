"""promtool for the tests of the generated rules: found (or the test skipped), and `promtool test rules`
run on a rules text and its unit tests (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labkit.measure.slo.rules import RULES_FILE_NAME

__all__ = ["promtool", "run_promtool_tests"]


def promtool() -> str:
    """The promtool on PATH; the test is skipped without one."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def run_promtool_tests(
    tmp_path: Path,
    tests: list[dict[str, Any]],
    *,
    rules: str,
    evaluation_interval: str = "1m",
    timeout_s: float = 120,
) -> None:
    """Write `rules` as the rule file and `tests` as its unit tests into `tmp_path`: promtool passes them."""
    binary = promtool()
    (tmp_path / RULES_FILE_NAME).write_text(rules)
    test_file = tmp_path / "slo_test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [RULES_FILE_NAME], "evaluation_interval": evaluation_interval, "tests": tests},
            sort_keys=False,
            allow_unicode=True,
        )
    )
    result = subprocess.run(
        [binary, "test", "rules", test_file.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stdout + result.stderr
