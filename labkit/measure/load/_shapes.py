"""The open loop's load shapes beyond constant and Poisson: a ramp from one rate to another, bursty gamma
arrivals (as `vllm bench serve --burstiness`), and the replay of a trace file of send offsets.

Each is a pure function of its settings (and seed): the same arguments give the same send offsets.
"""

from __future__ import annotations

import functools
import math
import random
from pathlib import Path

from pydantic import Field

from labkit.errors import ConfigError
from labkit.measure.load._workload import RequestOverride, read_model_lines
from labkit.measure.load_apis import Ramp

__all__ = [
    "TraceLine",
    "expected_requests",
    "gamma_offsets",
    "ramp_integral",
    "ramp_offsets",
    "read_trace_file",
]

_TRACE_FORMAT = (
    'each line is one JSON object: {"offset_s": seconds from the start, with optional "prompt_tokens": N '
    'or "prompt": "text", and "max_tokens": N}'
)


def expected_requests(rate: float, duration_s: float) -> int:
    """Requests a constant-rate schedule holds: offsets i/rate < duration_s (rounded against float noise)."""
    return max(1, math.ceil(round(rate * duration_s, 9)))


# ---- ramp ----------------------------------------------------------------------------------------
def ramp_integral(rate: float, rate_end: float, duration_s: float, ramp: Ramp) -> float:
    """Requests a ramp offers over its whole length: the integral of its rate from 0 to `duration_s`.
    Linear: (R1 + R2) / 2 x D. Exponential: D (R2 - R1) / ln(R2 / R1), the logarithmic mean x D."""
    if ramp == "linear" or math.isclose(rate, rate_end):
        return (rate + rate_end) / 2 * duration_s
    return duration_s * (rate_end - rate) / math.log(rate_end / rate)


def _ramp_time(i: float, rate: float, rate_end: float, duration_s: float, ramp: Ramp) -> float:
    """The time at which the ramp's integral reaches `i` (the inverse of the cumulative rate)."""
    if ramp == "exponential" and not math.isclose(rate, rate_end):
        log_ratio = math.log(rate_end / rate)
        return duration_s / log_ratio * math.log1p(i * log_ratio / (rate * duration_s))
    # Linear: R1 t + (R2 - R1) t^2 / 2D = i, solved in the form that stays exact when R2 = R1.
    half_slope = (rate_end - rate) / (2 * duration_s)
    return 2 * i / (rate + math.sqrt(max(0.0, rate * rate + 4 * half_slope * i)))


def ramp_offsets(rate: float, rate_end: float, duration_s: float, ramp: Ramp, cap: int) -> list[float]:
    """Send offsets of a ramp whose rate goes from `rate` at 0 to `rate_end` at `duration_s`, linearly or
    geometrically: request i leaves when the integral of the rate reaches i (i = 0, 1, ...), so the gaps
    follow the rate exactly (deterministic, as a constant schedule is) and the count is the integral
    rounded up; at most `cap`."""
    count = min(cap, max(1, math.ceil(round(ramp_integral(rate, rate_end, duration_s, ramp), 9))))
    offsets = [_ramp_time(i, rate, rate_end, duration_s, ramp) for i in range(count)]
    return [t for t in offsets if t < duration_s]


# ---- gamma ---------------------------------------------------------------------------------------
def gamma_offsets(rate: float, burstiness: float, duration_s: float, seed: int, cap: int) -> list[float]:
    """Bursty send offsets, as vLLM's `vllm bench serve --burstiness` draws them: N = rate x duration_s
    gaps from a gamma distribution of shape `burstiness` and scale 1 / (rate x burstiness) (mean 1 / rate,
    coefficient of variation 1 / sqrt(burstiness): 1 is exponential, below 1 burstier, above more regular),
    then all scaled by one factor so that they add up to N / rate exactly, as vLLM does to keep the offered
    rate from drifting with the seed. Each request leaves at the start of its gap (the first at 0), so that
    every offset is below `duration_s` as in the other shapes. Seeded by `random.Random(seed)`."""
    count = min(cap, expected_requests(rate, duration_s))
    rng = random.Random(seed)
    gaps = [rng.gammavariate(burstiness, 1 / (rate * burstiness)) for _ in range(count)]
    total = math.fsum(gaps)
    factor = count / rate / total if total > 0 else 1.0
    offsets, t = [], 0.0
    for gap in gaps:
        if t >= duration_s:
            break
        offsets.append(t)
        t += gap * factor
    return offsets


# ---- trace ---------------------------------------------------------------------------------------
class TraceLine(RequestOverride):
    """One line of a trace file: when the request leaves (`offset_s` from the run's start) and, optionally,
    its own prompt (`prompt` or `prompt_tokens`) and `max_tokens`, which win over the workload's."""

    offset_s: float = Field(ge=0, allow_inf_nan=False, description="seconds from the run's start")


def read_trace_file(path: Path) -> tuple[TraceLine, ...]:
    """The lines of a trace file (JSON Lines; blank lines skipped), each checked, in time order. A
    ConfigError names `file:line` and what is wrong there; a line earlier than the one before it is refused
    (a trace out of order is more likely two files run together than an intent)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the trace file {path}: {exc.strerror or exc}; give a readable UTF-8 file (--trace)"
        ) from None
    # A run reads its trace several times (the spec's checks, the schedule, the workload): parsed once.
    return _parse_trace_file(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parse_trace_file(path: Path, mtime_ns: int, size: int) -> tuple[TraceLine, ...]:
    lines: list[TraceLine] = []
    for where, line in read_model_lines(
        path, TraceLine, what="trace file", flag="--trace", file_format=_TRACE_FORMAT
    ):
        if lines and line.offset_s < lines[-1].offset_s:
            raise ConfigError(
                f"{where}: offset_s {line.offset_s:g} is before the previous line's {lines[-1].offset_s:g}; "
                f"the lines must be in time order: sort the file, e.g. "
                f"jq -c -s 'sort_by(.offset_s)[]' {path}"
            )
        lines.append(line)
    if not lines:
        raise ConfigError(f"the trace file {path} holds no line; {_TRACE_FORMAT}")
    return tuple(lines)
