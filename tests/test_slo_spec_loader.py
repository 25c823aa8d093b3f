"""Bad SLO specs are refused before anything runs, with one SloSpecError naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.config import stack_dir
from labkit.slo.spec import SloSpecError, load_slo_spec

SPEC = (stack_dir() / "slo.yaml").read_text()


def _second_document_line() -> int:
    # the 1-based line of the second document's first key (just after the first `---`)
    lines = SPEC.splitlines()
    return lines.index("---") + 2


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
    assert f"{path}:{_second_document_line()}:" in message
    assert "target" in message


def test_an_unknown_indicator_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, SPEC.replace("ratioMetric:", "rawMetric:", 1))
    with pytest.raises(SloSpecError, match=rf"{path}:5: .*unknown indicator \['rawMetric'\]"):
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
