"""Bad SLO specs are refused before anything runs, with one SloSpecError naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.config import stack_dir
from labkit.measure.slo.spec import SloSpecError, load_slo_spec

SPEC = (stack_dir() / "slo.yaml").read_text()


def _line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of `text` that contains `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slo.yaml"
    path.write_text(text)
    return path


def test_the_labs_spec_loads() -> None:
    slos = load_slo_spec()
    assert [s.name for s in slos] == ["availability", "time-to-first-token", "latency", "inter-token-latency"]
    assert [s.indicator for s in slos] == ["ratio", "threshold", "threshold", "threshold"]
    assert [o.target for s in slos for o in s.objectives] == [0.99, 0.95, 0.95, 0.99, 0.95]
    assert all(s.window_s == 30 * 86400 for s in slos)


@pytest.mark.parametrize("target", ["1.5", "1", "0", "-0.2"])
def test_an_objective_outside_0_1_is_refused_with_file_and_line(tmp_path: Path, target: str) -> None:
    # the second document (time-to-first-token) gets the bad target
    head, tail = SPEC.split("target: 0.95", 1)
    path = _write(tmp_path, head + f"target: {target}" + tail)
    with pytest.raises(SloSpecError) as info:
        load_slo_spec(path)
    message = str(info.value)
    # the line of the offending value itself, not the start of its document
    bad_line = head.count("\n") + 1
    assert message.startswith(f"{path}:{bad_line}: SLO time-to-first-token: spec.objectives[0].target: ")


def test_an_unknown_indicator_is_refused(tmp_path: Path) -> None:
    text = SPEC.replace("ratioMetric:", "rawMetric:", 1)
    path = _write(tmp_path, text)
    line = _line_of(text, "rawMetric:")
    with pytest.raises(
        SloSpecError, match=rf"{path}:{line}: SLO availability: spec.indicator.spec.rawMetric: unknown"
    ):
        load_slo_spec(path)


def test_malformed_yaml_is_refused_with_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: [unclosed\n")
    with pytest.raises(SloSpecError, match=rf"{path}:\d+:\d+: not valid YAML"):
        load_slo_spec(path)


def test_a_threshold_off_the_bucket_boundaries_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, SPEC.replace("value: 3.0", "value: 2.9"))
    with pytest.raises(SloSpecError, match="not a bucket boundary"):
        load_slo_spec(path)


def test_a_missing_spec_and_an_empty_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SloSpecError, match="cannot read SLO spec"):
        load_slo_spec(tmp_path / "none.yaml")
    with pytest.raises(SloSpecError, match="no SLO documents"):
        load_slo_spec(_write(tmp_path, "# nothing\n"))


# One small, valid document; each malformed variant below changes one thing in it. The expected line is
# the line of the offending key or value (not the line where the document starts: line 1 here).
GOOD = """\
apiVersion: openslo/v1
kind: SLO
metadata:
  name: latency
  displayName: Latency
spec:
  service: llm-wrapper
  indicator:
    spec:
      thresholdMetric:
        metricSource:
          type: Prometheus
          spec:
            query: llm_request_duration_seconds
  timeWindow:
    - duration: 30d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - displayName: 95% within 3 s
      op: lte
      value: 3.0
      target: 0.95
"""

RATIO = GOOD.replace(
    """      thresholdMetric:
        metricSource:
          type: Prometheus
          spec:
            query: llm_request_duration_seconds
""",
    """      ratioMetric:
        counter: true
        good:
          metricSource:
            spec:
              query: sum(good)
        total:
          metricSource:
            spec:
              query: sum(total)
""",
).replace("      op: lte\n      value: 3.0\n", "")

MALFORMED_SPECS = [
    # (id, text, line, words the message must hold)
    (
        "target_above_1",
        GOOD.replace("target: 0.95", "target: 1.5"),
        23,
        ["spec.objectives[0].target", "less than 1"],
    ),
    (
        "target_0",
        GOOD.replace("target: 0.95", "target: 0"),
        23,
        ["spec.objectives[0].target", "greater than 0"],
    ),
    ("target_nan", GOOD.replace("target: 0.95", "target: .nan"), 23, ["spec.objectives[0].target", "finite"]),
    (
        "target_text",
        GOOD.replace("target: 0.95", "target: high"),
        23,
        ["spec.objectives[0].target", "number"],
    ),
    (
        "negative_threshold",
        GOOD.replace("value: 3.0", "value: -1"),
        22,
        ["spec.objectives[0].value", "greater than 0"],
    ),
    (
        "off_bucket",
        GOOD.replace("value: 3.0", "value: 2.9"),
        22,
        ["spec.objectives[0].value", "bucket boundary"],
    ),
    ("no_op", GOOD.replace("      op: lte\n", ""), 21, ["spec.objectives[0].value", "needs `op: lte`"]),
    ("bad_op", GOOD.replace("op: lte", "op: gte"), 21, ["spec.objectives[0].op", "'lte'"]),
    (
        "objective_key",
        GOOD.replace("target: 0.95", "target: 0.95\n      weight: 2"),
        24,
        ["objectives[0].weight", "Extra"],
    ),
    (
        "no_target",
        GOOD.replace("      target: 0.95\n", ""),
        20,
        ["spec.objectives[0].target", "Field required"],
    ),
    (
        "no_objectives",
        GOOD.split("  objectives:")[0] + "  objectives: []\n",
        19,
        ["spec.objectives", "at least one"],
    ),
    ("duration_5x", GOOD.replace("duration: 30d", "duration: 5x"), 16, ["spec.timeWindow[0].duration", "5x"]),
    (
        "duration_negative",
        GOOD.replace("duration: 30d", "duration: -30d"),
        16,
        ["spec.timeWindow[0].duration"],
    ),
    (
        "no_duration",
        GOOD.replace("    - duration: 30d\n      isRolling", "    - isRolling"),
        16,
        ["spec.timeWindow[0].duration", "missing"],
    ),
    (
        "two_windows",
        GOOD.replace("      isRolling: true\n", "      isRolling: true\n    - duration: 7d\n"),
        15,
        ["spec.timeWindow", "one"],
    ),
    (
        "window_mapping",
        GOOD.replace("    - duration: 30d\n      isRolling: true", "    duration: 30d"),
        15,
        ["spec.timeWindow", "list"],
    ),
    (
        "budgeting",
        GOOD.replace("Occurrences", "RatioTimeslices"),
        18,
        ["spec.budgetingMethod", "Occurrences or Timeslices"],
    ),
    (
        "timeslices_without_slice_target",
        GOOD.replace("Occurrences", "Timeslices"),
        20,
        ["spec.objectives[0].timeSliceTarget", "missing"],
    ),
    (
        "timeslices_bad_slice_window",
        GOOD.replace("Occurrences", "Timeslices").replace(
            "      target: 0.95\n",
            "      target: 0.95\n      timeSliceTarget: 0.9\n      timeSliceWindow: 1min\n",
        ),
        25,
        ["timeSliceWindow", "integer followed by"],
    ),
    (
        "slice_target_on_occurrences",
        GOOD.replace("      target: 0.95\n", "      target: 0.95\n      timeSliceTarget: 0.9\n"),
        24,
        ["timeSliceTarget", "only applies to budgetingMethod Timeslices"],
    ),
    (
        "no_budgeting",
        GOOD.replace("  budgetingMethod: Occurrences\n", ""),
        6,
        ["spec.budgetingMethod", "missing"],
    ),
    ("api_version", GOOD.replace("openslo/v1", "openslo/v2"), 1, ["apiVersion", "openslo/v1"]),
    ("kind", GOOD.replace("kind: SLO", "kind: SLI"), 2, ["kind", "must be SLO"]),
    ("no_name", GOOD.replace("  name: latency\n", ""), 3, ["metadata.name", "missing"]),
    (
        "null_metadata",
        GOOD.replace("metadata:\n  name: latency\n  displayName: Latency\n", "metadata:\n"),
        3,
        ["metadata", "SLO document 1"],
    ),
    ("name_list", GOOD.replace("name: latency", "name: [latency]"), 4, ["name", "string"]),
    ("unknown_top_key", GOOD + "extra: 1\n", 24, ["extra", "unknown field"]),
    ("unknown_spec_key", GOOD.replace("  service:", "  servce:"), 7, ["spec.servce", "unknown field"]),
    (
        "unknown_window_key",
        GOOD.replace("isRolling", "rolling"),
        17,
        ["spec.timeWindow[0].rolling", "unknown"],
    ),
    ("alert_policies", GOOD + "  alertPolicies: [page]\n", 24, ["spec.alertPolicies", "unknown field"]),
    (
        "unknown_metric",
        GOOD.replace("llm_request_duration_seconds", "http_seconds"),
        14,
        ["thresholdMetric.metricSource.spec.query", "not one of the lab's histograms"],
    ),
    (
        "no_query",
        GOOD.replace("            query: llm_request_duration_seconds\n", "            {}\n"),
        13,
        ["metricSource.spec.query", "missing"],
    ),
    (
        "indicator_list",
        GOOD.replace("    spec:\n      thresholdMetric", "    spec:\n    - thresholdMetric"),
        9,
        ["spec.indicator.spec", "mapping"],
    ),
    (
        "no_total",
        RATIO.replace(
            "        total:\n          metricSource:\n            spec:\n              query: sum(total)\n",
            "",
        ),
        10,
        ["ratioMetric.total", "missing"],
    ),
    (
        "ratio_key",
        RATIO.replace("counter: true", "counter: true\n        bad: {}"),
        12,
        ["ratioMetric.bad", "unknown field"],
    ),
    (
        "spec_list",
        "apiVersion: openslo/v1\nkind: SLO\nmetadata: {name: x}\nspec:\n  - 1\n",
        4,
        ["spec", "mapping"],
    ),
    ("document_list", "- apiVersion: openslo/v1\n", 1, ["must be a mapping"]),
    ("document_text", "# an SLO\nlatency\n", 2, ["must be a mapping"]),
    (
        "duplicate_key",
        GOOD.replace("  service: llm-wrapper\n", "  service: llm-wrapper\n  service: other\n"),
        8,
        ["spec.service", "given twice"],
    ),
    (
        "duplicate_name",
        GOOD + "---\n" + GOOD,
        28,
        ["metadata.name", "'latency' is already the name", "line 4"],
    ),
    (
        "second_document",
        GOOD + "---\n" + GOOD.replace("latency", "latency-2").replace("target: 0.95", "target: 2"),
        47,
        ["SLO latency-2", "spec.objectives[0].target"],
    ),
    ("yaml_syntax", GOOD.replace("  service: llm-wrapper", "  service: [llm-wrapper"), 8, ["not valid YAML"]),
    ("yaml_tab", GOOD.replace("  service:", "\tservice:"), 7, ["not valid YAML"]),
]


@pytest.mark.parametrize(
    ("text", "line", "words"), [m[1:] for m in MALFORMED_SPECS], ids=[m[0] for m in MALFORMED_SPECS]
)
def test_a_malformed_spec_names_the_line_and_field(
    tmp_path: Path, text: str, line: int, words: list[str]
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SloSpecError) as info:
        load_slo_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_the_small_documents_the_table_breaks_are_valid(tmp_path: Path) -> None:
    assert [s.name for s in load_slo_spec(_write(tmp_path, GOOD))] == ["latency"]
    ratio = load_slo_spec(_write(tmp_path, RATIO))[0]
    assert (ratio.indicator, ratio.good_query, ratio.total_query) == ("ratio", "sum(good)", "sum(total)")
    assert ratio.line == 1
