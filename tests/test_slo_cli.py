"""`labkit slo rules` and `labkit slo check RUN_DIR`: output, slo.json, exit codes and error lines."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from labkit.cli import cli


def _row(i: int, *, ok: bool = True, e2e: float = 1.0) -> dict:
    return {
        "request_id": i,
        "intended_send": 1000.0 + i,
        "actual_send": 1000.0 + i,
        "queue_delay_s": 0.0,
        "ttft_s": 0.2 if ok else None,
        "itl_s": [0.01] * 5 if ok else [],
        "e2e_s": e2e,
        "output_tokens": 6,
        "prompt_tokens": 36,
        "status": 200 if ok else 503,
        "ok": ok,
        "error_kind": None if ok else "http_5xx",
        "done_reason": "stop" if ok else None,
    }


def _run_dir(tmp_path: Path, rows: list[dict], tail: str = "") -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return run


def test_rules_prints_the_rule_file() -> None:
    result = CliRunner().invoke(cli, ["slo", "rules"])
    assert result.exit_code == 0, result.output
    rules = yaml.safe_load(result.stdout)
    # one group per SLO, then (production windows 2h, 1d, 3d: rules.long_windows) its slower group
    assert [g["name"] for g in rules["groups"]] == [
        name
        for slo in ("availability", "time-to-first-token", "latency", "inter-token-latency")
        for name in (f"slo-{slo}", f"slo-{slo}-long-windows")
    ]


def test_check_of_a_run_that_meets_every_slo(tmp_path: Path) -> None:
    # 50 good requests; a torn last line (a crash mid-write) is skipped
    run = _run_dir(tmp_path, [_row(i) for i in range(50)], tail='{"request_id": 50, "inte')
    result = CliRunner().invoke(cli, ["slo", "check", str(run)])
    assert result.exit_code == 0, result.output
    assert "verdict: met" in result.stdout
    assert "BURN" in result.stdout and "of 30d" in result.stdout
    saved = json.loads((run / "slo.json").read_text())
    assert saved["verdict"] == "met" and saved["requests"] == 50


def test_check_of_a_violating_run_exits_1(tmp_path: Path) -> None:
    # 2 of 50 fail: availability 96 % < 99 %
    rows = [_row(i, ok=i not in (10, 20)) for i in range(50)]
    run = _run_dir(tmp_path, rows)
    result = CliRunner().invoke(cli, ["slo", "check", str(run)])
    assert result.exit_code == 1
    assert "verdict: violated — 1 of 5 objectives: availability" in result.stdout
    assert json.loads((run / "slo.json").read_text())["verdict"] == "violated"


def test_check_json_output(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, [_row(i) for i in range(10)])
    result = CliRunner().invoke(cli, ["slo", "check", str(run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"] == "met"


def test_check_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["slo", "check", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: run directory") and missing.stderr.count("\n") == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    no_samples = runner.invoke(cli, ["slo", "check", str(empty)])
    assert no_samples.exit_code == 1 and "error: no client samples" in no_samples.stderr

    run = _run_dir(tmp_path, [_row(0)], tail="not json\n")
    malformed = runner.invoke(cli, ["slo", "check", str(run)])
    assert malformed.exit_code == 1 and "requests.jsonl:2: not a JSON object" in malformed.stderr

    spec = tmp_path / "slo.yaml"
    spec.write_text("apiVersion: openslo/v1\nkind: [SLO\n")
    bad_spec = runner.invoke(cli, ["slo", "check", str(run), "--spec", str(spec)])
    assert bad_spec.exit_code == 1 and f"error: {spec}:" in bad_spec.stderr
    bad_rules = runner.invoke(cli, ["slo", "rules", "--spec", str(spec)])
    assert bad_rules.exit_code == 1 and "not valid YAML" in bad_rules.stderr


def test_rules_profile_lab_prints_the_scaled_windows() -> None:
    result = CliRunner().invoke(cli, ["slo", "rules", "--profile", "lab"])
    assert result.exit_code == 0, result.output
    alerts = [r for g in yaml.safe_load(result.stdout)["groups"] for r in g["rules"] if "alert" in r]
    assert {(a["labels"]["long_window"], a["labels"]["short_window"]) for a in alerts} == {
        ("2m", "10s"),
        ("12m", "1m"),
        ("48m", "4m"),
        ("144m", "12m"),
    }
    assert {a["labels"]["alert_profile"] for a in alerts} == {"lab"}
    unknown = CliRunner().invoke(cli, ["slo", "rules", "--profile", "staging"])
    assert unknown.exit_code == 2 and "staging" in unknown.output


def test_validate_prints_the_rules_or_file_line_errors(tmp_path: Path) -> None:
    from labkit.measure.slo.spec import default_spec_path

    good = CliRunner().invoke(cli, ["slo", "validate", str(default_spec_path()), "--profile", "lab"])
    assert good.exit_code == 0, good.output
    assert "alert profile lab" in good.stdout and "4 SLO(s) valid" in good.stderr
    assert yaml.safe_load(good.stdout)["groups"]
    text = default_spec_path().read_text()
    spec = tmp_path / "slo.yaml"
    spec.write_text(text.replace("      target: 0.99\n", "      target: 1.5\n", 1))
    bad_line = text[: text.index("      target: 0.99\n")].count("\n") + 1
    bad = CliRunner().invoke(cli, ["slo", "validate", str(spec)])
    assert bad.exit_code == 1
    assert bad.stderr.startswith(f"{spec}:{bad_line}: SLO availability: spec.objectives[0].target:"), (
        bad.stderr
    )
    assert bad.stdout == ""
