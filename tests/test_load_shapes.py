"""The open loop's load shapes: a ramp (linear, exponential), vLLM's bursty gamma gaps, and trace replay with
per-request lengths; each seeded, each validated with one message per bad input, each recorded in params.json.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labkit.cli import cli
from labkit.errors import ConfigError
from labkit.measure.load import (
    LoadSpec,
    TraceLine,
    load_requests_frame,
    prompt_choices,
    read_trace_file,
    run_load,
    schedule,
    workload,
)
from labkit.measure.load._shapes import ramp_integral
from labkit.rundir import RunFile

URL = "http://127.0.0.1:8000"


def _spec(**values: Any) -> LoadSpec:
    return LoadSpec(**({"url": URL, "duration_s": 10.0} | values))


def _gaps(offsets: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(offsets)]


def _trace(tmp_path: Path, lines: list[Any], name: str = "trace.jsonl") -> Path:
    path = tmp_path / name
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


# ---- ramp ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ramp", ["linear", "exponential"])
@pytest.mark.parametrize(("rate", "rate_end", "duration"), [(1, 10, 20), (2, 50, 30), (0.5, 3, 7.3)])
def test_a_ramp_sends_its_integral_and_its_rate_grows(
    ramp: str, rate: float, rate_end: float, duration: float
) -> None:
    spec = _spec(arrival="ramp", rate=rate, rate_end=rate_end, ramp=ramp, duration_s=duration)
    offsets = schedule(spec)
    integral = ramp_integral(rate, rate_end, duration, spec.ramp or "linear")
    assert abs(len(offsets) - integral) <= 1
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < duration
    first_half = sum(1 for t in offsets if t < duration / 2)
    assert first_half < len(offsets) - first_half
    gaps = _gaps(offsets)
    assert all(b < a for a, b in itertools.pairwise(gaps))  # the rate only grows: every gap is shorter


def test_a_linear_ramp_follows_its_rate_at_every_point() -> None:
    spec = _spec(arrival="ramp", rate=1, rate_end=10, duration_s=20)
    offsets = schedule(spec)
    assert len(offsets) == 110  # (1 + 10) / 2 x 20
    assert spec.offered_rate == 5.5  # the mean rate, what a run's summary calls its target
    for i, (a, b) in enumerate(itertools.pairwise(offsets)):
        # request i + 1 leaves where the integral R1 t + (R2 - R1) t^2 / 2D reaches i + 1
        assert a + (10 - 1) * a * a / 40 == pytest.approx(i, abs=1e-9)
        assert 1 / (b - a) == pytest.approx(1 + 9 * (a + b) / 2 / 20, rel=1e-9)  # midpoint rate


def test_an_exponential_ramp_is_geometric() -> None:
    offsets = schedule(_spec(arrival="ramp", ramp="exponential", rate=1, rate_end=16, duration_s=40))
    assert len(offsets) == math.ceil(40 * 15 / math.log(16))
    # the rate doubles every quarter (10 s): each quarter holds about twice the one before
    quarters = [sum(1 for t in offsets if q * 10 <= t < (q + 1) * 10) for q in range(4)]
    for a, b in itertools.pairwise(quarters):
        assert b / a == pytest.approx(2, rel=0.15)


def test_a_ramp_down_and_a_flat_ramp() -> None:
    down = schedule(_spec(arrival="ramp", rate=10, rate_end=1, duration_s=20))
    assert len(down) == 110 and all(b > a for a, b in itertools.pairwise(_gaps(down)))
    for ramp in ("linear", "exponential"):
        flat = schedule(_spec(arrival="ramp", ramp=ramp, rate=4, rate_end=4, duration_s=5))
        assert flat == pytest.approx(schedule(_spec(rate=4, duration_s=5)), abs=1e-12)


def test_a_ramp_is_linear_unless_told() -> None:
    assert _spec(arrival="ramp", rate=1, rate_end=2).ramp == "linear"
    assert _spec(arrival="ramp", rate=1, rate_end=2, ramp="exponential").ramp == "exponential"


# ---- gamma ---------------------------------------------------------------------------------------
def test_gamma_schedule_is_seeded() -> None:
    spec = _spec(arrival="gamma", rate=20, burstiness=0.5, seed=7)
    assert schedule(spec) == schedule(_spec(arrival="gamma", rate=20, burstiness=0.5, seed=7))
    assert schedule(spec) != schedule(_spec(arrival="gamma", rate=20, burstiness=0.5, seed=8))
    assert prompt_choices(spec, 30) == prompt_choices(
        _spec(arrival="gamma", rate=20, burstiness=0.5, seed=7), 30
    )


@pytest.mark.parametrize("burstiness", [0.5, 1.0, 4.0])
def test_gamma_gaps_have_the_mean_of_the_rate_and_the_spread_of_the_shape(burstiness: float) -> None:
    # 20 000 gaps: the sample coefficient of variation's standard error is under 2 % for these shapes
    # (its variance is about (excess kurtosis 6/k + 2) / 4N), so 5 % is a band of 2.5 sigma and more.
    spec = _spec(arrival="gamma", rate=50, burstiness=burstiness, duration_s=400, seed=3)
    offsets = schedule(spec)
    assert len(offsets) == 20_000  # N = rate x duration_s, as vLLM's fixed count
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < 400
    gaps = _gaps(offsets)
    mean = statistics.fmean(gaps)
    # vLLM scales the N gaps to add up to N / rate exactly: N - 1 of them average 1 / rate within 1 %
    assert mean == pytest.approx(1 / 50, rel=0.01)
    assert statistics.pstdev(gaps) / mean == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_gamma_below_one_is_burstier_than_poisson_and_above_one_more_regular() -> None:
    def cv(burstiness: float) -> float:
        gaps = _gaps(schedule(_spec(arrival="gamma", rate=10, burstiness=burstiness, duration_s=100, seed=1)))
        return statistics.pstdev(gaps) / statistics.fmean(gaps)

    assert cv(0.2) > cv(1.0) > cv(5.0)


# ---- trace ---------------------------------------------------------------------------------------
def test_a_trace_is_replayed_at_its_offsets_with_its_own_lengths(tmp_path: Path) -> None:
    path = _trace(
        tmp_path,
        [
            {"offset_s": 0},
            {"offset_s": 0.25, "prompt_tokens": 7, "max_tokens": 3},
            {"offset_s": 0.25, "max_tokens": 5},
            "",
            {"offset_s": 1.125, "prompt": "Why is the sky blue?"},
            {"offset_s": 2.5},
        ],
    )
    spec = _spec(arrival="trace", trace_file=path, duration_s=None, prompts=["fixed"], max_tokens=9)
    assert schedule(spec) == [0, 0.25, 0.25, 1.125, 2.5]
    assert spec.duration_s == math.nextafter(2.5, math.inf)  # the trace's own length: every line is sent
    assert spec.offered_rate is None  # a trace sets its own times
    work = workload(spec)
    requests = [work.next() for _ in range(5)]
    bodies = [json.loads(body) for _, body in requests]
    assert [b["max_tokens"] for b in bodies] == [9, 3, 5, 9, 9]
    assert bodies[0]["prompt"] == bodies[2]["prompt"] == bodies[4]["prompt"] == "fixed"
    assert len(bodies[1]["prompt"].split()) == 7  # a synthetic prompt of the line's length
    assert bodies[3]["prompt"] == "Why is the sky blue?"
    # a request with a prompt of its own is numbered as the request, as synthetic prompts are
    assert [index for index, _ in requests] == [0, 1, 0, 3, 0]


def test_a_trace_reaches_the_chat_api_and_a_given_duration_cuts_it(tmp_path: Path) -> None:
    path = _trace(tmp_path, [{"offset_s": t, "prompt_tokens": 4 + t} for t in range(6)])
    spec = _spec(
        arrival="trace", trace_file=path, duration_s=3, api="openai-chat", model="m", prompt_tokens="100"
    )
    assert schedule(spec) == [0, 1, 2]
    work = workload(spec)
    words = [len(json.loads(work.next()[1])["messages"][0]["content"].split()) for _ in range(3)]
    assert words == [4, 5, 6]


def test_a_trace_is_capped_by_max_requests(tmp_path: Path) -> None:
    path = _trace(tmp_path, [{"offset_s": t / 10} for t in range(30)])
    with pytest.raises(ConfigError, match=r"trace_file \(--trace\): 30 requests .* max_requests = 20"):
        _spec(arrival="trace", trace_file=path, duration_s=None, max_requests=20)
    assert len(schedule(_spec(arrival="trace", trace_file=path, duration_s=1.95, max_requests=20))) == 20


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["not json"], r"trace.jsonl:1: not JSON"),
        ([[1, 2]], r"trace.jsonl:1: a JSON list, not an object"),
        ([{"offset_s": 0}, {"prompt_tokens": 3}], r"trace.jsonl:2: offset_s: Field required"),
        ([{"offset_s": -1}], r"trace.jsonl:1: offset_s: Input should be greater than or equal to 0"),
        ([{"offset_s": "soon"}], r"trace.jsonl:1: offset_s: Input should be a valid number"),
        (
            [{"offset_s": 0, "prompt_tokens": 0}],
            r"trace.jsonl:1: prompt_tokens: .*greater than or equal to 1",
        ),
        ([{"offset_s": 0, "max_tokens": -2}], r"trace.jsonl:1: max_tokens: .*greater than or equal to 1"),
        (
            [{"offset_s": 0, "prompt": "a", "prompt_tokens": 2}],
            r"trace.jsonl:1: .*\"prompt\" or \"prompt_tokens\"",
        ),
        ([{"offset_s": 0, "prompt": "  "}], r"trace.jsonl:1: .*\"prompt\" is blank"),
        ([{"offset_s": 0, "at": 1}], r"trace.jsonl:1: at: unknown field; check its spelling"),
        (
            [{"offset_s": 2}, "", {"offset_s": 1}],
            r"trace.jsonl:3: offset_s 1 is before the previous line's 2; "
            r".*sort the file, e.g. jq -c -s 'sort_by\(.offset_s\)\[\]'",
        ),
        ([""], r"the trace file .*trace.jsonl holds no line"),
    ],
)
def test_every_bad_trace_line_is_named_with_its_place(tmp_path: Path, lines: list[Any], match: str) -> None:
    path = _trace(tmp_path, lines)
    with pytest.raises(ConfigError, match=match):
        read_trace_file(path)
    with pytest.raises(ConfigError, match=match):  # the spec reads it before anything is sent
        _spec(arrival="trace", trace_file=path, duration_s=None)


def test_an_unreadable_trace_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read the trace file .*missing.jsonl.*\(--trace\)"):
        _spec(arrival="trace", trace_file=tmp_path / "missing.jsonl", duration_s=None)


def test_a_trace_file_edited_between_two_reads_is_read_again(tmp_path: Path) -> None:
    path = _trace(tmp_path, [{"offset_s": 1}])
    assert read_trace_file(path) == (TraceLine(offset_s=1),)
    _trace(tmp_path, [{"offset_s": 1}, {"offset_s": 22}])
    assert [line.offset_s for line in read_trace_file(path)] == [1, 22]


# ---- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"arrival": "ramp", "rate": 1}, r"rate_end \(--rate-end\): arrival='ramp' goes from rate"),
        ({"arrival": "ramp", "rate": 1, "rate_end": 0}, r"rate_end \(--rate-end\): .*greater than 0; pass"),
        ({"arrival": "ramp", "rate": 1, "rate_end": 2, "ramp": "cubic"}, r"ramp \(--ramp\): .*'linear' or"),
        ({"arrival": "ramp", "rate_end": 2}, r"rate \(--rate\): an open loop needs a rate"),
        ({"rate": 1, "rate_end": 2}, r"rate_end \(--rate-end\) applies to arrival='ramp' only .*'constant'"),
        (
            {"rate": 1, "ramp": "linear"},
            r"ramp \(--ramp\) applies to arrival='ramp' only .*; drop it, or use --arrival ramp",
        ),
        (
            {"arrival": "gamma", "rate": 1},
            r"burstiness \(--burstiness\): arrival='gamma' needs the gamma shape",
        ),
        ({"arrival": "gamma", "rate": 1, "burstiness": 0}, r"burstiness \(--burstiness\): .*greater than 0"),
        ({"arrival": "gamma", "rate": 1, "burstiness": float("inf")}, r"burstiness \(--burstiness\)"),
        (
            {"arrival": "poisson", "rate": 1, "burstiness": 2},
            r"burstiness \(--burstiness\) applies to arrival='gamma'",
        ),
        ({"arrival": "trace"}, r"trace_file \(--trace\): arrival='trace' sends at the offsets"),
        ({"rate": 1, "trace_file": "t.jsonl"}, r"trace_file \(--trace\) applies to arrival='trace' only"),
        (
            {"arrival": "wave", "rate": 1},
            r"arrival \(--arrival\): .*use 'constant', 'poisson', 'ramp', 'gamma'",
        ),
        (
            {"mode": "closed", "concurrency": 2, "arrival": "ramp"},
            r"arrival='ramp' applies to an open loop only",
        ),
        ({"mode": "closed", "concurrency": 2, "burstiness": 1}, r"burstiness \(--burstiness\) applies to"),
        ({"rate": 1, "duration_s": None}, r"duration_s \(--duration-s\): Field required; pass a duration"),
        (
            {"arrival": "ramp", "rate": 100, "rate_end": 300, "duration_s": 1000},
            r"the ramp's integral = 200000 requests, over the cap max_requests = 100000; "
            r"lower --rate, --rate-end",
        ),
        (
            {"arrival": "gamma", "rate": 1000, "burstiness": 1, "duration_s": 200},
            r"rate x duration_s = 200000 requests, over the cap",
        ),
    ],
)
def test_every_bad_shape_is_one_config_error_naming_the_field(values: dict[str, Any], match: str) -> None:
    values = {"url": URL, "duration_s": 10.0} | values
    with pytest.raises(ConfigError, match=match) as info:
        LoadSpec(**values)
    assert str(info.value).startswith("invalid load spec: ")


def test_a_trace_refuses_a_rate(tmp_path: Path) -> None:
    path = _trace(tmp_path, [{"offset_s": 0}])
    with pytest.raises(ConfigError, match=r"rate \(--rate\): a trace sets its own send times"):
        _spec(arrival="trace", trace_file=path, rate=3)
    with pytest.raises(ConfigError, match=r"rate_end \(--rate-end\) applies to arrival='ramp' only"):
        _spec(arrival="trace", trace_file=path, rate_end=3)


# ---- a run: every scheduled request one row, bodies as the trace says, the shape in params.json ----
class _Recorder(BaseHTTPRequestHandler):
    """The wrapper's non-streamed /generate answer to every request, each body kept."""

    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        answer = json.dumps(
            {"model": "sim", "response": "a b c", "done": True, "done_reason": "length", "output_tokens": 3}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _recording_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    handler = type("Recorder", (_Recorder,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_trace_run_sends_each_line_with_its_lengths(tmp_path: Path) -> None:
    path = _trace(
        tmp_path,
        [{"offset_s": 0, "max_tokens": 2}, {"offset_s": 0.05, "prompt_tokens": 5}, {"offset_s": 0.1}],
    )
    with _recording_server() as (url, bodies):
        result = run_load(
            LoadSpec(url=url, arrival="trace", trace_file=path, max_tokens=8, timeout_s=5),
            tmp_path,
            progress=False,
        )
    frame = load_requests_frame(result.run_dir)
    assert len(frame) == 3 and frame["ok"].all()
    sent = sorted(bodies, key=lambda b: b["max_tokens"])
    assert [b["max_tokens"] for b in sent] == [2, 8, 8]
    assert sorted(len(b["prompt"].split()) for b in bodies if b["max_tokens"] == 8)[0] == 5
    gaps = frame["intended_send"].diff().dropna().tolist()
    assert gaps == pytest.approx([0.05, 0.05], abs=1e-6)
    summary = result.run_dir.read_json(RunFile.PARAMS)["load"]["schedule"]
    assert summary["arrival"] == "trace" and summary["scheduled"] == 3 and summary["trace_lines"] == 3
    assert summary["trace_file"]["path"] == str(path) and len(summary["trace_file"]["sha256"]) == 64


def test_cli_load_sends_a_ramp_and_records_its_shape(tmp_path: Path) -> None:
    with _recording_server() as (url, bodies):
        result = CliRunner().invoke(
            cli,
            [
                "load",
                "--arrival",
                "ramp",
                "--rate",
                "10",
                "--rate-end",
                "30",
                "--ramp",
                "exponential",
                "--duration-s",
                "0.4",
                "--url",
                url,
                "--out",
                str(tmp_path),
                "--no-progress",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "(target 10 to 30/s, exponential)" in result.output
    (run_dir,) = tmp_path.iterdir()
    params = json.loads((run_dir / RunFile.PARAMS).read_text())["load"]
    expected = math.ceil(0.4 * 20 / math.log(3))
    assert params["schedule"]["scheduled"] == expected == len(bodies)
    shape = {k: params["schedule"][k] for k in ("arrival", "rate", "rate_end", "ramp")}
    assert shape == {"arrival": "ramp", "rate": 10.0, "rate_end": 30.0, "ramp": "exponential"}
    assert params["spec"]["arrival"] == "ramp" and params["spec"]["ramp"] == "exponential"


def test_cli_load_gamma_and_trace_flags(tmp_path: Path) -> None:
    path = _trace(tmp_path, [{"offset_s": 0}, {"offset_s": 0.1}])
    out = tmp_path / "runs"
    with _recording_server() as (url, bodies):
        gamma = CliRunner().invoke(
            cli,
            [
                "load",
                "--arrival",
                "gamma",
                "--burstiness",
                "0.5",
                "--rate",
                "20",
                "--duration-s",
                "0.2",
                "--url",
                url,
                "--out",
                str(out),
                "--no-progress",
            ],
        )
        trace = CliRunner().invoke(
            cli,
            [
                "load",
                "--arrival",
                "trace",
                "--trace",
                str(path),
                "--url",
                url,
                "--out",
                str(out),
                "--no-progress",
            ],
        )
        refused = CliRunner().invoke(
            cli,
            [
                "load",
                "--arrival",
                "gamma",
                "--rate",
                "20",
                "--duration-s",
                "1",
                "--url",
                url,
                "--out",
                str(out),
            ],
        )
    assert gamma.exit_code == 0, gamma.output
    assert trace.exit_code == 0, trace.output
    assert "requests 4  ok 4" in gamma.output and "requests 2  ok 2" in trace.output
    assert len(bodies) == 6
    assert refused.exit_code == 1 and "burstiness (--burstiness): arrival='gamma' needs" in refused.output
    spec = [json.loads((d / RunFile.PARAMS).read_text())["load"]["spec"] for d in sorted(out.iterdir())]
    assert {s["arrival"] for s in spec} == {"gamma", "trace"}
    assert {s["burstiness"] for s in spec} == {0.5, None}
