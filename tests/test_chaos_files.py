"""labkit.chaos experiment files: YAML and JSON, every error with the file and line it is about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit.chaos import (
    EXAMPLE_EXPERIMENT,
    ExperimentLoad,
    RemediationPolicy,
    SteadyState,
    load_experiment_file,
    plan_text,
    random_schedule,
)
from labkit.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_file_parses(tmp_path: Path) -> None:
    experiment = load_experiment_file(write(tmp_path, "exp.yaml", EXAMPLE_EXPERIMENT))
    assert [f.kind for f in experiment.schedule.faults] == ["latency", "kill"]
    assert experiment.title == "latency then a killed model"
    spec = experiment.spec()
    assert spec.duration_s == 60.0 and spec.title == experiment.title
    assert spec.load == ExperimentLoad(rate=2.0, stream=True, max_tokens=32)
    assert spec.steady_state == SteadyState(enabled=True, duration_s=5.0)
    assert spec.remediation is None and spec.schedule == experiment.schedule


def test_a_json_file_gives_the_same_schedule(tmp_path: Path) -> None:
    doc = {
        "duration_s": 30,
        "faults": [{"kind": "pause", "target": "wrapper", "start_s": 2, "duration_s": 3}],
        "load": {"rate": 1, "seed": 4},
    }
    experiment = load_experiment_file(write(tmp_path, "exp.json", json.dumps(doc, indent=2)))
    (fault,) = experiment.schedule.faults
    assert (fault.kind, fault.target, fault.start_s, fault.duration_s) == ("pause", "wrapper", 2, 3)
    spec = experiment.spec()
    assert (spec.duration_s, spec.load.rate, spec.load.seed) == (30.0, 1.0, 4)
    assert spec.load.max_tokens == ExperimentLoad().max_tokens  # what the file leaves out has the default


def test_a_duration_given_with_the_file_wins_and_must_fit_its_schedule(tmp_path: Path) -> None:
    doc = {"faults": [{"kind": "pause", "target": "wrapper", "start_s": 2, "duration_s": 3}]}
    experiment = load_experiment_file(write(tmp_path, "exp.yaml", json.dumps(doc)))
    with pytest.raises(ConfigError, match="has no duration_s; pass --duration-s"):
        experiment.spec()
    assert experiment.spec(10).duration_s == 10
    with pytest.raises(ConfigError, match=r"exp.yaml with duration_s 4: .*faults\[0\].*ends at 5 s"):
        experiment.spec(4)


def test_a_random_section_draws_the_seeded_schedule(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "exp.yaml",
        "duration_s: 90\nrandom:\n  seed: 7\n  kinds: [pause, latency]\n  fault_duration_s: [2, 4]\n",
    )
    expected = random_schedule(7, 90, kinds=["pause", "latency"], fault_duration_s=(2, 4))
    assert load_experiment_file(path).schedule == expected
    assert plan_text(load_experiment_file(path).schedule) == plan_text(expected)


def test_a_remediation_section_becomes_the_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "exp.yaml",
        "duration_s: 30\nfaults: []\nremediation: {target: wrapper, threshold_s: 0.5, dry_run: true}\n",
    )
    policy = load_experiment_file(path).spec().remediation
    assert policy == RemediationPolicy(target="wrapper", threshold_s=0.5, dry_run=True)


BAD_FILES = [
    (
        "fields.yaml",
        "duration_s: 30\n"
        "faults:\n"
        "  - kind: latency\n"
        "    start_s: 1\n"
        "    duration_s: 5\n"
        "    params:\n"
        "      delay_s: -1\n"
        "  - kind: kill\n"
        "    target: exporter\n"
        "    duration_s: 3\n",
        [
            ":7: faults[0].params.delay_s: Input should be greater than 0",
            ":9: faults[1].target: 'exporter' is not a target of a kill fault",
        ],
    ),
    (
        "unknown_kind.yaml",
        "faults:\n  - {kind: pause, duration_s: 2}\n  - {kind: explode, duration_s: 2}\n",
        [":3: faults[1].kind: Input should be 'kill'"],
    ),
    (
        "negative.yaml",
        "faults:\n  - kind: pause\n    duration_s: -4\n",
        [":3: faults[0].duration_s: Input should be greater than 0"],
    ),
    (
        "too_long.yaml",
        "duration_s: 30\n"
        "faults:\n"
        "  - {kind: pause, duration_s: 2}\n"
        "  - {kind: latency, start_s: 20, duration_s: 20}\n",
        [":4: faults[1]: latency on model at 20 s for 20 s (delay_s=0.5 jitter_s=0) ends at 40 s"],
    ),
    (
        "overlap.yaml",
        "faults:\n  - {kind: pause, duration_s: 10}\n  - {kind: pause, start_s: 5, duration_s: 2}\n",
        [":3: faults[1]: pause on model at 5 s for 2 s overlaps faults[0]"],
    ),
    ("syntax.yaml", "duration_s: 30\nfaults:\n  - kind: pause\n   start_s: 20\n", [":4:4: not valid YAML"]),
    ("syntax.json", '{"faults": [\n  {"kind": "pause", "duration_s": 2},\n]}\n', [":3:1: not valid JSON"]),
    (
        "json_fields.json",
        '{"duration_s": 30,\n "faults": [\n   {"kind": "pause",\n    "duration_s": 2,\n'
        '    "target": "db"}\n ]}\n',
        [":5: faults[0].target: 'db' is not a target of a pause fault"],
    ),
    (
        "top.yaml",
        "duration_s: 30\nload: {rate: -1}\nfaults: []\nspeed: 3\n",
        [":2: load.rate: Input should be greater than 0", ":4: speed: unknown field"],
    ),
    ("neither.yaml", "duration_s: 30\n", [":1: give either `faults:`"]),
    ("both.yaml", "duration_s: 30\nfaults: []\nrandom: {seed: 1}\n", [":3: give either `faults:`"]),
    ("random_no_duration.yaml", "random: {seed: 1}\n", [":1: random: needs the run's duration_s"]),
    (
        "random_kind.yaml",
        "duration_s: 60\nrandom:\n  seed: 1\n  kinds: [pause, explode]\n",
        [":4: random.kinds: unknown fault kind 'explode'"],
    ),
    ("list.yaml", "- kind: pause\n", [":1: an experiment file is a mapping"]),
    ("empty.yaml", "", [":1: an experiment file (this one is empty) is a mapping"]),
    ("text.yaml", "# an experiment\njust words\n", [":2: an experiment file is a mapping"]),
    ("bad_duration.yaml", "faults: []\nduration_s: 5x\n", [":2: duration_s: Input should be a valid number"]),
    ("infinite.yaml", "faults: []\nduration_s: .inf\n", [":2: duration_s: Input should be a finite number"]),
    (
        "hours.yaml",
        "faults: []\nduration_s: 7200\n",
        [":2: duration_s: Input should be less than or equal to 3600"],
    ),
    ("twice.yaml", "duration_s: 30\nfaults: []\nduration_s: 60\n", [":3: duration_s: given twice"]),
    (
        "twice_nested.yaml",
        "duration_s: 30\nfaults:\n  - kind: pause\n    duration_s: 2\n    kind: kill\n",
        [":5: faults[0].kind: given twice"],
    ),
    (
        "twice.json",
        '{"duration_s": 30,\n "faults": [],\n "duration_s": 60}\n',
        [":3: duration_s: given twice"],
    ),
    (
        "late_start.yaml",
        "duration_s: 30\nfaults:\n  - kind: pause\n    start_s: 40\n    duration_s: 2\n",
        [":4: faults[0]: pause on model at 40 s for 2 s ends at 42 s, after the run's 30 s"],
    ),
    (
        "faults_mapping.yaml",
        "duration_s: 30\nfaults:\n  kind: pause\n",
        [":2: faults: Input should be a valid list"],
    ),
    (
        "load_list.yaml",
        "duration_s: 30\nfaults: []\nload:\n  - 1\n",
        [":3: load: Input should be a valid dict"],
    ),
    ("item.yaml", "duration_s: 30\nfaults:\n  - 3\n", [":3: faults[0]: Input should be a valid dict"]),
    ("no_kind.yaml", "faults:\n  - start_s: 1\n    duration_s: 2\n", [":2: faults[0].kind: Field required"]),
    (
        "negative_start.yaml",
        "faults:\n  - kind: pause\n    start_s: -1\n    duration_s: 2\n",
        [":3: faults[0].start_s: Input should be greater than or equal to 0"],
    ),
    (
        "steady.yaml",
        "faults: []\nsteady_state:\n  enabled: true\n  duration_s: 0\n",
        [":4: steady_state.duration_s: Input should be greater than 0"],
    ),
    (
        "seed.yaml",
        "duration_s: 30\nrandom:\n  seed: abc\n",
        [":3: random.seed: Input should be a valid integer"],
    ),
    (
        "big_delay.yaml",
        "faults:\n  - kind: latency\n    duration_s: 2\n    params: {delay_s: 100}\n",
        [":4: faults[0].params.delay_s: Input should be less than or equal to 60"],
    ),
    (
        "fault_key.yaml",
        "faults:\n  - kind: pause\n    duration_s: 2\n    when: 3\n",
        [":4: faults[0].when: unknown field"],
    ),
    (
        "gap.yaml",
        "duration_s: 60\nrandom:\n  seed: 1\n  mean_gap_s: -3\n",
        [":4: random.mean_gap_s: must be a number in (0, 3600], got -3.0"],
    ),
    (
        "nan_rate.yaml",
        "faults: []\nload:\n  rate: .nan\n",
        [":3: load.rate: Input should be a finite number"],
    ),
    (
        "remediation.yaml",
        "duration_s: 30\nfaults: []\nremediation:\n  target: wrapper\n  threshold_s: -1\n  retries: 2\n",
        [
            ":5: remediation.threshold_s: Input should be greater than 0",
            ":6: remediation.retries: unknown field",
        ],
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_errors_name_the_file_and_line(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as caught:
        load_experiment_file(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(expected), lines
    for line, wanted in zip(lines, expected, strict=True):
        assert line.startswith(f"{path}{wanted}"), line


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read experiment file .*nope\.yaml"):
        load_experiment_file(tmp_path / "nope.yaml")


def test_an_experiment_may_load_the_wrappers_openai_api(tmp_path: Path) -> None:
    text = (
        "duration_s: 20\n"
        'load: {api: openai-chat, rate: 1, prompt_tokens: "128:32"}\n'
        "faults: [{kind: pause, start_s: 5, duration_s: 3}]\n"
    )
    spec = load_experiment_file(write(tmp_path, "exp.yaml", text)).spec()
    assert spec.load.api == "openai-chat" and str(spec.load.prompt_tokens) == "128:32"
    record = spec.params_record(tmp_path, plan="")["experiment"]
    assert (record["api"], record["prompt_tokens"]) == ("openai-chat", "128:32")
    load = spec.load.load_spec("http://127.0.0.1:8000", duration_s=spec.duration_s, api_key_file=None)
    assert load.target == "http://127.0.0.1:8000/v1/chat/completions" and load.stream
    assert load.prompt_tokens == spec.load.prompt_tokens and load.duration_s == 20
    default = ExperimentLoad().load_spec("http://127.0.0.1:8000", duration_s=5, api_key_file=None)
    assert default.target == "http://127.0.0.1:8000/generate" and default.api == "generate"


def test_an_unknown_api_in_an_experiment_file_names_its_field(tmp_path: Path) -> None:
    text = "duration_s: 20\nload: {api: grpc}\nfaults: [{kind: pause, start_s: 5, duration_s: 3}]\n"
    with pytest.raises(ConfigError, match=r"load\.api.*'generate', 'openai-chat' or 'openai-completions'"):
        load_experiment_file(write(tmp_path, "exp.yaml", text)).spec()


def test_a_remediation_on_an_alert_has_no_p95_trigger_beside_it(tmp_path: Path) -> None:
    faults = "faults:\n  - {kind: error, start_s: 5, duration_s: 10}\n"
    on_alert = "remediation: {target: wrapper, on_alert: SloErrorBudgetBurnPage, cooldown_s: 20}\n"
    spec = load_experiment_file(write(tmp_path, "a.yaml", "duration_s: 30\n" + on_alert + faults)).spec()
    assert spec.remediation == RemediationPolicy(on_alert="SloErrorBudgetBurnPage", cooldown_s=20)
    assert spec.replace(load={"rate": 1}).remediation == spec.remediation  # survives a round trip
    both = "remediation: {on_alert: SloErrorBudgetBurnPage, breaches_to_act: 2}\n"
    with pytest.raises(ConfigError, match=r"b\.yaml:2: .*give on_alert or breaches_to_act, not both"):
        load_experiment_file(write(tmp_path, "b.yaml", "duration_s: 30\n" + both + faults))


def test_an_experiment_may_send_bursty_gamma_arrivals(tmp_path: Path) -> None:
    text = (
        "duration_s: 20\n"
        "load: {rate: 4, arrival: gamma, burstiness: 0.25}\n"
        "faults: [{kind: pause, start_s: 5, duration_s: 3}]\n"
    )
    spec = load_experiment_file(write(tmp_path, "exp.yaml", text)).spec()
    record = spec.params_record(tmp_path, plan="")["experiment"]
    assert (record["arrival"], record["burstiness"]) == ("gamma", 0.25)
    load = spec.load.load_spec("http://127.0.0.1:8000", duration_s=spec.duration_s, api_key_file=None)
    assert (load.arrival, load.burstiness, load.rate) == ("gamma", 0.25, 4)


@pytest.mark.parametrize(
    ("load", "match"),
    [
        ("{arrival: gamma}", r"exp\.yaml:2: .*burstiness: arrival 'gamma' needs the gaps' shape"),
        ("{burstiness: 2}", r"exp\.yaml:2: .*burstiness applies to arrival 'gamma' only .*'constant'"),
        ("{arrival: ramp}", r"load\.arrival.*'constant', 'poisson' or 'gamma'"),
    ],
)
def test_an_experiment_s_arrival_and_burstiness_go_together(tmp_path: Path, load: str, match: str) -> None:
    text = f"duration_s: 20\nload: {load}\nfaults: [{{kind: pause, start_s: 5, duration_s: 3}}]\n"
    with pytest.raises(ConfigError, match=match):
        load_experiment_file(write(tmp_path, "exp.yaml", text)).spec()
