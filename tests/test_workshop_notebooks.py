"""The workshop's exercises and their solutions (notebooks/workshop/, solutions/): the same notebook but for
the answer cells, every exercise stops at an empty answer with a short message, and the helpers they call
(labkit.scenarios.exercises) say how close a prediction came and check an SLO as `labkit slo validate`."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from labkit.scenarios import (
    WORKSHOP_NOTEBOOKS,
    WORKSHOP_SOLUTIONS,
    ExerciseNotDone,
    check_slo,
    compare_prediction,
    require_answer,
)

WORKSHOP = Path(__file__).resolve().parents[1] / "notebooks" / "workshop"
STACK_SLO = Path(__file__).resolve().parents[1] / "stack" / "slo.yaml"


def _cells(path: Path) -> list[nbformat.NotebookNode]:
    return list(nbformat.read(path, as_version=4).cells)


@pytest.mark.parametrize("name", sorted(WORKSHOP_NOTEBOOKS))
def test_a_solution_is_its_exercise_with_the_answers_written(name: str) -> None:
    exercise, solution = _cells(WORKSHOP / name), _cells(WORKSHOP / WORKSHOP_SOLUTIONS / name)
    assert len(exercise) == len(solution)
    answers = 0
    for ours, theirs in zip(exercise, solution, strict=True):
        tags = ours.metadata.get("tags", [])
        if "exercise" not in tags:
            assert (ours.cell_type, ours.source, tags) == (
                theirs.cell_type, theirs.source, theirs.metadata.get("tags", [])
            )  # fmt: skip
            continue
        assert theirs.metadata.get("tags") == ["solution"], theirs.metadata
        if ours.cell_type != "code":
            continue
        answers += 1
        # each answer starts empty and is checked in its own cell; the solution writes every one of them
        names = re.findall(r"require_answer\(.*?name=\"(\w+)\"", ours.source, re.S)
        assert names, ours.source
        for variable in names:
            assert f"{variable} = None" in ours.source, (name, variable)
            assert f"{variable} = None" not in theirs.source, (name, variable)
            assert re.search(rf"^\s*{variable} = \S", theirs.source, re.M), (name, variable)
    assert answers >= 1, f"{name} has no exercise cell"


def test_an_empty_answer_stops_with_one_line_naming_what_to_write() -> None:
    assert require_answer(0.0, name="x", what="a number") == 0.0  # zero is an answer
    with pytest.raises(ExerciseNotDone, match=r"set `my_p95_prediction_s` to your p95") as raised:
        require_answer(None, name="my_p95_prediction_s", what="your p95 in seconds")
    # what IPython shows instead of the traceback (ipykernel sends it as the error's traceback)
    (line,) = raised.value._render_traceback_()
    assert line.startswith("ExerciseNotDone: the exercise is waiting for you: set `my_p95_prediction_s`")


def test_a_prediction_is_said_close_too_low_or_too_high() -> None:
    close = compare_prediction(2.0, 2.2, what="p95")
    assert close.close and "close, within 10%" in str(close) and "you predicted 2 s" in str(close)
    low = compare_prediction(1.0, 12.0, what="p95")
    assert not low.close and low.ratio == 12.0 and "too low, off by a factor of 12" in str(low)
    high = compare_prediction(8.0, 2.0, what="capacity", unit="requests/s")
    assert "too high, off by a factor of 4" in str(high) and "2 requests/s" in str(high)
    assert "nothing was measured" in str(compare_prediction(3.0, None, what="time to page"))
    missing = compare_prediction(3.0, None, what="recovery", missing="no bad request")
    assert str(missing).endswith("; no bad request")
    assert compare_prediction(0.0, 1.0, what="p95").ratio is None


def test_an_slo_is_checked_and_its_pages_listed(tmp_path: Path) -> None:
    availability = STACK_SLO.read_text().split("\n---\n")[0]
    check = check_slo(availability, tmp_path / "my_slo.yaml")
    assert check.slos == ["availability"] and (tmp_path / "my_slo.yaml").read_text() == availability
    fast = check.alerts[0]
    assert (fast["severity"], fast["long_window"], fast["short_window"], fast["threshold"]) == (
        "page", "2m", "10s", 0.144,
    )  # fmt: skip
    assert (fast["long_window_s"], fast["short_window_s"]) == (120.0, 10.0)
    assert "SloErrorBudgetBurnPage" in check.rules and "0.144" in str(check)


def test_a_wrong_slo_stops_with_its_file_and_line(tmp_path: Path) -> None:
    broken = STACK_SLO.read_text().split("\n---\n")[0].replace("target: 0.99", "target: 1.5")
    with pytest.raises(ExerciseNotDone, match=rf"{tmp_path / 'my_slo.yaml'}:\d+: SLO availability: .*target"):
        check_slo(broken, tmp_path / "my_slo.yaml")
