"""Bad input to the command line is refused before anything starts: one `error:` line that names the
flag, variable or parameter, and exit status 2 (a flag click cannot parse: wrong type, unknown choice)
or 1 (a value labkit refuses: out of range, inconsistent), with no lab, run directory or request made.

Each test below arms tripwires on the functions that would start something (a lab, a notebook run, a
load, an experiment): a fake here only records that it was reached, which the tests assert never happens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import labkit.chaos
import labkit.cli
import labkit.lab.registry
import labkit.measure.load
import labkit.runner
import labkit.scenarios
from labkit.cli import cli
from labkit.errors import ConfigError
from labkit.params import ParameterError
from labkit.runner.notebooks import notebook_parameters, notebooks_dir
from labkit.runner.runs import ScenarioRunner
from labkit.scenarios import (
    SCENARIOS,
    Alerting,
    Baseline,
    KillAndRecover,
    LatencyAndRemediation,
    RandomChaos,
)

STARTED: list[str] = []


@pytest.fixture(autouse=True)
def tripwires(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every way of starting something records itself instead (and fails the test)."""
    STARTED.clear()

    def wire(what: str) -> Any:
        def tripped(*args: Any, **kwargs: Any) -> Any:
            STARTED.append(what)
            raise AssertionError(f"tripwire: {what} was reached")

        return tripped

    monkeypatch.setitem(labkit.lab.registry.BACKENDS, "local", wire("LocalBackend"))
    monkeypatch.setitem(labkit.lab.registry.BACKENDS, "docker", wire("DockerBackend"))
    monkeypatch.setattr(labkit.scenarios, "open_lab", wire("open_lab"))
    monkeypatch.setattr(ScenarioRunner, "execute", wire("ScenarioRunner.execute"))
    monkeypatch.setattr(labkit.measure.load, "run_load", wire("run_load"))
    monkeypatch.setattr(labkit.chaos, "run_experiment", wire("run_experiment"))
    for name in list(__import__("os").environ):
        if name.startswith("LABKIT_") and name not in ("LABKIT_NOTEBOOKS_DIR", "LABKIT_STACK_DIR"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _invoke(tmp_path: Path, args: list[str]) -> tuple[Result, Path]:
    out = tmp_path / "out"
    lab = tmp_path / "lab"
    with_out = args[0] in ("run", "load", "smoke", "capacity") or args[:2] == ["chaos", "run"]
    result = CliRunner().invoke(
        cli, ["--lab-dir", str(lab), *args, *(["--out", str(out)] if with_out else [])]
    )
    return result, out


def _assert_refused(tmp_path: Path, result: Result, out: Path, code: int, words: list[str]) -> None:
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    for word in words:
        assert word in result.stderr, result.stderr
    assert STARTED == []
    assert not out.exists()
    assert not (tmp_path / "lab").exists()
    assert not (tmp_path / "state").exists()


# ---- the CLI's own flags ---------------------------------------------------------------------------

PORT_FLAGS = ["--model-port", "--wrapper-port", "--prometheus-port", "--exporter-port", "--alertmanager-port"]
UP_SIM = ["up", "--engine", "sim"]

BAD_FLAGS: list[tuple[list[str], int, list[str]]] = [
    # labkit up: ports (type and 1-65535), durations and counts, choices, text that may not be empty
    *[([*UP_SIM, flag, "abc"], 2, [flag, "not a valid integer"]) for flag in PORT_FLAGS],
    *[([*UP_SIM, flag, "8000.5"], 2, [flag]) for flag in PORT_FLAGS],
    *[([*UP_SIM, flag, "0"], 1, [flag, "greater than or equal to 1"]) for flag in PORT_FLAGS],
    *[([*UP_SIM, flag, "-1"], 1, [flag]) for flag in PORT_FLAGS],
    *[([*UP_SIM, flag, "65536"], 1, [flag, "less than or equal to 65535"]) for flag in PORT_FLAGS],
    ([*UP_SIM, "--wrapper-port", "9090"], 1, ["ports must differ"]),
    *[
        ([*UP_SIM, flag, value], 1, [flag])
        for flag in ("--backend-timeout-s", "--ready-timeout-s", "--scrape-interval-s")
        for value in ("0", "-1", "nan", "inf")
    ],
    *[
        ([*UP_SIM, flag, "soon"], 2, [flag, "not a valid float"])
        for flag in ("--ready-timeout-s", "--sim-ttft-s")
    ],
    ([*UP_SIM, "--sim-ttft-s", "-0.1"], 1, ["--sim-ttft-s"]),
    ([*UP_SIM, "--sim-ttft-s", "nan"], 1, ["--sim-ttft-s", "finite"]),
    ([*UP_SIM, "--sim-itl-s", "inf"], 1, ["--sim-itl-s", "finite"]),
    ([*UP_SIM, "--scrape-interval-s", "61"], 1, ["--scrape-interval-s"]),
    ([*UP_SIM, "--max-in-flight", "0"], 1, ["--max-in-flight"]),
    ([*UP_SIM, "--max-in-flight", "many"], 2, ["--max-in-flight"]),
    ([*UP_SIM, "--num-parallel", "65"], 1, ["--num-parallel"]),
    ([*UP_SIM, "--max-queue", "0"], 1, ["--max-queue"]),
    ([*UP_SIM, "--max-prompt-chars", "0"], 1, ["--max-prompt-chars"]),
    ([*UP_SIM, "--seed", "1.5"], 2, ["--seed"]),
    ([*UP_SIM, "--keep-alive", "5x"], 1, ["--keep-alive", "5x"]),
    ([*UP_SIM, "--keep-alive", "inf"], 1, ["--keep-alive", "finite"]),
    ([*UP_SIM, "--host", ""], 1, ["--host"]),
    ([*UP_SIM, "--model-name", ""], 1, ["--model-name"]),
    ([*UP_SIM, "--prometheus-bin", ""], 1, ["--prometheus-bin"]),
    ([*UP_SIM, "--gpus", "first"], 1, ["--gpus"]),
    ([*UP_SIM, "--ollama-url", "localhost:11434"], 1, ["--ollama-url", "http://"]),
    (["up", "--engine", "gpt"], 2, ["--engine", "'gpt' is not one of"]),
    (["up", "--backend", "k8s"], 2, ["--backend", "'k8s' is not one of"]),
    (["up", "--wrapper-prot", "8000"], 2, ["--wrapper-prot", "No such option"]),
    (["up", "--wrapper-port"], 2, ["--wrapper-port", "requires an argument"]),
    # labkit run (its own flags; the notebook parameters are below)
    (["run", "baseline", "--engine", "gpt"], 2, ["--engine"]),
    (["run", "baseline", "--backend", "k8s"], 2, ["--backend"]),
    (["run", "baseline", "--no-progress=yes"], 2, ["--no-progress", "does not take a value"]),
    (["run", "nope"], 1, ["unknown scenario 'nope'"]),
    # labkit load
    *[
        (["load", "--url", "http://127.0.0.1:9", "--duration-s", "1", "--rate", value], 1, ["--rate"])
        for value in ("0", "-2", "nan", "inf")
    ],
    *[
        (["load", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration-s", value], 1, ["--duration-s"])
        for value in ("0", "-5", "nan", "inf", "4000")
    ],
    (["load", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration-s", "5x"], 2, ["--duration-s"]),
    (["load", "--url", "http://127.0.0.1:9", "--rate", "1"], 2, ["--duration-s"]),
    (
        ["load", "--url", "http://127.0.0.1:9", "--duration-s", "1", "--concurrency", "0"],
        1,
        ["--concurrency"],
    ),
    (
        ["load", "--url", "http://127.0.0.1:9", "--duration-s", "1", "--concurrency", "two"],
        2,
        ["--concurrency"],
    ),
    (
        ["load", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration-s", "1", "--timeout-s", "0"],
        1,
        ["--timeout-s"],
    ),
    (
        ["load", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration-s", "1", "--timeout-s", "nan"],
        1,
        ["--timeout-s"],
    ),
    (
        ["load", "--url", "http://127.0.0.1:9", "--rate", "1", "--duration-s", "1", "--max-tokens", "0"],
        1,
        ["--max-tokens"],
    ),
    (["load", "--url", "ftp://127.0.0.1:9", "--rate", "1", "--duration-s", "1"], 1, ["--url"]),
    (["load", "--url", "http://10.1.2.3:8000", "--rate", "1", "--duration-s", "1"], 1, ["--url"]),
    (["load", "--url", "http://127.0.0.1:9", "--rate", "1000", "--duration-s", "3600"], 1, ["--rate"]),
    (["run", "capacity", "-p", "point_s", "60", "-p", "max_search_s", "30"], 1, ["leaves no time"]),
    # labkit capacity: the search's bounds, its rates, the load of its points
    (["capacity", "--url", "http://127.0.0.1:9", "--precision", "0"], 1, ["precision"]),
    (["capacity", "--url", "http://127.0.0.1:9", "--repeats", "0"], 1, ["repeats"]),
    (["capacity", "--url", "http://127.0.0.1:9", "--repeats", "30"], 1, ["repeats"]),
    (
        ["capacity", "--url", "http://127.0.0.1:9", "--point-s", "60", "--max-search-s", "10"],
        1,
        ["max_search_s"],
    ),
    (["capacity", "--url", "http://127.0.0.1:9", "--rates", "1,two"], 2, ["--rates", "separated by commas"]),
    (["capacity", "--url", "http://10.1.2.3:8000"], 1, ["--url", "loopback"]),
    (["capacity", "--url", "http://127.0.0.1:9", "--max-tokens", "0"], 1, ["--max-tokens"]),
    (["capacity", "--url", "http://127.0.0.1:9", "--arrival", "bursty"], 2, ["--arrival"]),
    # labkit chaos plan / run: durations (0 once silently meant the default 120 s), rates, choices
    *[
        (["chaos", "plan", "--seed", "1", "--duration-s", value], 1, ["--duration-s"])
        for value in ("0", "-5", "nan", "inf", "3601")
    ],
    *[
        (["chaos", "run", "--seed", "1", "--duration-s", value], 1, ["--duration-s"])
        for value in ("0", "-5", "nan", "inf")
    ],
    *[
        (["chaos", "run", "--seed", "1", "--rate", value], 1, ["--rate"])
        for value in ("0", "-1", "nan", "inf")
    ],
    (["chaos", "plan", "--seed", "one"], 2, ["--seed"]),
    (
        ["chaos", "run", "--seed", "1", "--remediate", "database"],
        2,
        ["--remediate", "'database' is not one of"],
    ),
    *[
        (
            ["chaos", "run", "--seed", "1", "--remediate", "wrapper", "--remediation-threshold-s", value],
            1,
            ["threshold_s"],
        )
        for value in ("0", "-1", "nan", "inf")
    ],
    (["chaos", "run", "--seed", "1", "--remediation-threshold-s", "1"], 1, ["--remediate SERVICE"]),
    (["chaos", "run", "--file", "no-such-file.yaml"], 2, ["--file", "does not exist"]),
    # the others
    (["smoke", "--requests", "0"], 2, ["--requests", "1<=x<=100"]),
    (["smoke", "--max-tokens", "5000"], 2, ["--max-tokens"]),
    (["logs", "database"], 2, ["'database' is not one of"]),
    (["logs", "model", "-n", "0"], 2, ["--lines"]),
    (["images", "build", "--only", "database"], 1, ["unknown image(s) database"]),
    (["launch"], 2, ["No such command 'launch'"]),
]


@pytest.mark.parametrize(("args", "code", "words"), BAD_FLAGS, ids=[" ".join(b[0]) for b in BAD_FLAGS])
def test_a_bad_flag_is_one_line_and_starts_nothing(
    tmp_path: Path, args: list[str], code: int, words: list[str]
) -> None:
    result, out = _invoke(tmp_path, args)
    _assert_refused(tmp_path, result, out, code, words)


def test_a_chaos_duration_given_with_a_file_must_fit_its_faults(tmp_path: Path) -> None:
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("duration_s: 60\nfaults:\n  - {kind: pause, start_s: 30, duration_s: 10}\n")
    result, out = _invoke(tmp_path, ["chaos", "run", "--file", str(experiment), "--duration-s", "20"])
    _assert_refused(tmp_path, result, out, 1, ["with duration_s 20", "ends at 40 s"])


def test_usage_errors_name_the_command_to_ask_for_help(tmp_path: Path) -> None:
    result, _ = _invoke(tmp_path, ["up", "--wrapper-port", "abc"])
    assert result.stderr == (
        "error: Invalid value for '--wrapper-port': 'abc' is not a valid integer; see `cli up --help`\n"
    )


# ---- LABKIT_* variables --------------------------------------------------------------------------

BAD_VARIABLES = [
    ("LABKIT_WRAPPER_PORT", "abc", "valid integer"),
    ("LABKIT_WRAPPER_PORT", "0", "greater than or equal to 1"),
    ("LABKIT_MODEL_PORT", "70000", "less than or equal to 65535"),
    ("LABKIT_PROMETHEUS_PORT", "-9090", "greater than or equal to 1"),
    ("LABKIT_EXPORTER_PORT", "9188.5", "valid integer"),
    ("LABKIT_BACKEND_TIMEOUT_S", "inf", "finite"),
    ("LABKIT_BACKEND_TIMEOUT_S", "0", "greater than 0"),
    ("LABKIT_READY_TIMEOUT_S", "nan", "finite"),
    ("LABKIT_SCRAPE_INTERVAL_S", "-1", "greater than 0"),
    ("LABKIT_SIM_TTFT_S", "soon", "valid number"),
    ("LABKIT_SIM_JITTER", "3", "less than or equal to 2"),
    ("LABKIT_NUM_PARALLEL", "0", "greater than or equal to 1"),
    ("LABKIT_MAX_IN_FLIGHT", "lots", "valid integer"),
    ("LABKIT_ENGINE", "gpt", "'llama', 'sim', 'ollama', 'llamacpp-server' or 'openai'"),
    ("LABKIT_BACKEND", "k8s", "'local' or 'docker'"),
    ("LABKIT_KEEP_ALIVE", "5x", "5x"),
    ("LABKIT_HOST", "", "at least 1 character"),
    ("LABKIT_SEED", "x", "valid integer"),
    ("LABKIT_OLLAMA_URL", "localhost", "http://"),
]


@pytest.mark.parametrize(
    ("name", "value", "words"), BAD_VARIABLES, ids=[f"{n}={v}" for n, v, _ in BAD_VARIABLES]
)
def test_a_bad_variable_is_named_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    result, out = _invoke(tmp_path, ["up"] if name == "LABKIT_ENGINE" else UP_SIM)
    _assert_refused(tmp_path, result, out, 1, [name, words])


# ---- notebook parameters (labkit run SCENARIO -p NAME VALUE) ----------------------------------------

BAD_PARAMETERS: list[tuple[list[str], list[str]]] = [
    # wrong types and unknown names (checked before this work too)
    (["baseline", "-p", "duration_s", "abc"], ["duration_s expects float"]),
    (["baseline", "-p", "max_tokens", "1.5"], ["max_tokens expects int"]),
    (["baseline", "-p", "seed", "x"], ["seed expects int"]),
    (["latency_and_remediation", "-p", "dry_run", "maybe"], ["dry_run expects bool"]),
    (["baseline", "-p", "duraton_s", "5"], ["no parameter 'duraton_s'"]),
    (["baseline", "-p", "run_dir", "/tmp/x"], ["run_dir is set by labkit run"]),
    (["--all", "-p", "bogus", "1"], ["no scenario has a parameter 'bogus'"]),
    # out of range: refused before the lab starts (they used to fail in the notebook, after it had)
    *[
        (["baseline", "-p", "duration_s", value], ["parameter duration_s", repr(float(value)), "(0, 3600] s"])
        for value in ("-5", "0", "nan", "inf", "-inf", "3601")
    ],
    *[
        (["baseline", "-p", "rate", value], ["parameter rate", "(0, 1000] requests/s"])
        for value in ("0", "-1", "nan", "1e9")
    ],
    *[
        (["baseline", "-p", "max_tokens", value], ["parameter max_tokens", "[1, 4096]"])
        for value in ("0", "-3", "5000")
    ],
    (["check_setup", "-p", "duration_s", "-1"], ["scenario check_setup", "parameter duration_s"]),
    (["check_setup", "-p", "rate", "inf"], ["scenario check_setup", "parameter rate"]),
    (
        ["kill_and_recover", "-p", "kill_at_s", "100"],
        ["parameter kill_at_s", "100.0", "[0, duration_s = 60)"],
    ),
    (["kill_and_recover", "-p", "kill_at_s", "-1"], ["parameter kill_at_s", "-1.0"]),
    (["kill_and_recover", "-p", "duration_s", "20", "-p", "kill_at_s", "20"], ["[0, duration_s = 20)"]),
    (["kill_and_recover", "-p", "duration_s", "10"], ["parameter kill_at_s", "20.0", "[0, duration_s = 10)"]),
    (
        ["kill_and_recover", "-p", "target", "exporter"],
        ["parameter target", "one of model, wrapper, alertmanager, prometheus"],
    ),
    (["kill_and_recover", "-p", "steady_state_s", "0"], ["parameter steady_state_s", "(0, 600] s"]),
    (["kill_and_recover", "-p", "steady_state_s", "nan"], ["parameter steady_state_s"]),
    (["kill_and_recover", "--quick", "-p", "kill_at_s", "25"], ["[0, duration_s = 20)", "(with --quick)"]),
    (
        ["latency_and_remediation", "-p", "latency_at_s", "59.5"],
        ["parameter latency_at_s", "[0, duration_s - 1 = 59)"],
    ),
    (["latency_and_remediation", "-p", "delay_s", "0"], ["parameter delay_s", "(0, 60] s"]),
    (["latency_and_remediation", "-p", "delay_s", "61"], ["parameter delay_s"]),
    (["latency_and_remediation", "-p", "threshold_s", "-1"], ["parameter threshold_s"]),
    (["latency_and_remediation", "-p", "breaches_to_act", "0"], ["parameter breaches_to_act", "[1, 100]"]),
    (["latency_and_remediation", "-p", "breaches_to_act", "101"], ["parameter breaches_to_act"]),
    (["random_chaos", "-p", "kinds", "explode"], ["parameter kinds", "'explode'", "comma-separated list"]),
    (["random_chaos", "-p", "kinds", "pause, explode"], ["parameter kinds"]),
    (["random_chaos", "-p", "duration_s", "nan"], ["parameter duration_s"]),
    (["--all", "-p", "duration_s", "-5"], ["parameter duration_s of scenario check_setup"]),
    (["--all", "--quick", "-p", "rate", "0"], ["parameter rate", "(with --quick)"]),
]


@pytest.mark.parametrize(("args", "words"), BAD_PARAMETERS, ids=[" ".join(b[0]) for b in BAD_PARAMETERS])
def test_a_bad_notebook_parameter_is_refused_before_the_lab_starts(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    result, out = _invoke(tmp_path, ["run", *args])
    _assert_refused(tmp_path, result, out, 1, words)
    assert "-p" in result.stderr or "parameter" in result.stderr


def test_a_range_error_says_what_to_do() -> None:
    runner = ScenarioRunner(out=Path("unused"))
    with pytest.raises(ParameterError) as caught:
        runner.plan("baseline", {"duration_s": "-5"})
    assert str(caught.value) == (
        "parameter duration_s of scenario baseline is -5.0, outside its range: duration_s must be in "
        "(0, 3600] s; pass a value in that range (labkit run baseline -p duration_s VALUE, "
        "or papermill -p duration_s VALUE)"
    )


# ---- the specs themselves: one declaration for the runner and the notebooks ------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_catalog_its_notebooks_and_the_specs_agree(name: str) -> None:
    scenario = SCENARIOS[name]
    declared = notebook_parameters(notebooks_dir() / scenario.notebook)
    assert set(declared) == set(scenario.params.model_fields), (
        "the notebook and its spec name other parameters"
    )
    scenario.params()  # the defaults are valid
    # the quick parameters (what CI runs) are valid, and are what --quick plans
    plan = ScenarioRunner(out=Path("unused")).plan(name, quick=True)
    assert dict(plan.parameters) == scenario.quick
    scenario.check_parameters(scenario.quick)


def test_a_notebook_checks_its_parameters_before_it_touches_the_lab() -> None:
    """What papermill running a notebook on its own meets: its first cell builds its spec from the parameters
    cell (`from_notebook(globals())`), which refuses the values before the lab is opened."""
    with pytest.raises(ConfigError, match="parameter duration_s of scenario baseline"):
        Baseline.from_notebook({"duration_s": float("nan")})
    with pytest.raises(ConfigError, match=r"\[0, duration_s = 60\)"):
        KillAndRecover.from_notebook({"kill_at_s": 100, "other": "ignored"})
    with pytest.raises(ConfigError, match="parameter target"):
        KillAndRecover(target="exporter")
    with pytest.raises(ConfigError, match=r"\[0, duration_s - 1 = 59\)"):
        LatencyAndRemediation(latency_at_s=59.5)
    with pytest.raises(ConfigError, match="parameter kinds"):
        RandomChaos(kinds="pause, explode")
    with pytest.raises(ConfigError, match="parameter rate"):
        RandomChaos(rate=0)
    with pytest.raises(ConfigError, match="parameter max_tokens of scenario baseline is 'many'"):
        Baseline(max_tokens="many")
    # the alerting scenario's phases must leave its recovery inside the method
    with pytest.raises(ConfigError, match=r"storm_s \+ kill_after_s = 210 s leaves less than 20 s"):
        Alerting(duration_s=220, baseline_s=100, storm_s=60, kill_after_s=50)


def test_counts() -> None:
    """The number of bad inputs each table tries (reported with the hardening issue)."""
    assert len(BAD_FLAGS) >= 100 and len(BAD_VARIABLES) >= 15 and len(BAD_PARAMETERS) >= 40
