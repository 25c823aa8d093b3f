"""Runs side by side: "did my change make recovery faster, or latency worse?" Each run after the first is
compared with the first (the baseline) on its client SLIs, its recovery per fault and its latency
distribution.

A difference is flagged only when it is larger than the runs' own noise: each metric's difference gets a
bootstrap confidence interval (the requests of each run resampled with replacement, `resamples` times,
percentile interval), and a difference is flagged when that interval excludes zero *and* the difference is at
least the metric's smallest effect worth reporting (`MIN_EFFECT`: a tiny but consistent shift of a quiet sim
run is noise for a person). A flagged worsening is a `regression`, a flagged bettering an `improvement`,
anything else `no difference`. A regression larger than its `--fail-on` threshold fails the comparison.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from labkit.atomic import write_atomically
from labkit.errors import ConfigError
from labkit.measure.slo import valid_requests
from labkit.report.data import RunData
from labkit.report.distribution import cdf_figure, draw_cdf
from labkit.report.marks import ReportFigure
from labkit.report.tables import format_ms

__all__ = [
    "METRICS",
    "MIN_EFFECT",
    "MIN_EFFECT_MS",
    "MIN_TAIL",
    "Comparison",
    "MetricDiff",
    "Observations",
    "compare_runs",
    "parse_fail_on",
    "write_comparison",
]

Direction = Literal["higher", "lower"]  # which way is better
Finding = Literal["regression", "improvement", "no difference", "not comparable"]


@dataclass(frozen=True)
class Observations:
    """A run's observations of one metric, grouped by request: `values` in request order and `lengths`, how
    many each request contributed (1 each for a per-request metric; its token gaps for inter-token
    latency). The bootstrap resamples requests, so a request's gaps move together."""

    values: np.ndarray
    lengths: np.ndarray

    @property
    def requests(self) -> int:
        return int(self.lengths.size)

    @classmethod
    def per_request(cls, values: np.ndarray) -> Observations:
        return cls(values, np.ones(values.size, dtype=int))


@dataclass(frozen=True)
class Metric:
    """A client SLI computed from a run's requests: `values` picks the observations, `statistic` reduces
    them (the same function on the bootstrap resamples); a quantile `q` needs at least `MIN_TAIL / (1 - q)`
    observations to be compared."""

    name: str
    label: str
    unit: str
    better: Direction
    values: Callable[[pd.DataFrame], Observations]
    statistic: Callable[[np.ndarray], Any]  # over the last axis: a value, or one per resample
    quantile: float | None = None


def _ok(samples: pd.DataFrame) -> pd.DataFrame:
    return samples[samples["ok"] & valid_requests(samples)]


def _seconds_ms(column: str) -> Callable[[pd.DataFrame], Observations]:
    def values(samples: pd.DataFrame) -> Observations:
        if column not in samples.columns:
            return Observations.per_request(np.array([]))
        return Observations.per_request(_ok(samples)[column].dropna().to_numpy(float) * 1000)

    return values


def _gaps_ms(samples: pd.DataFrame) -> Observations:
    if "itl_s" not in samples.columns:
        return Observations.per_request(np.array([]))
    lists = [list(itl) for itl in _ok(samples)["itl_s"] if isinstance(itl, list | np.ndarray) and len(itl)]
    if not lists:
        return Observations.per_request(np.array([]))
    return Observations(np.concatenate(lists).astype(float) * 1000, np.array([len(g) for g in lists]))


def _successes(samples: pd.DataFrame) -> Observations:
    valid = samples[valid_requests(samples)]
    return Observations.per_request(valid["ok"].astype(float).to_numpy())


def _quantile(q: float) -> Callable[[np.ndarray], Any]:
    def statistic(values: np.ndarray) -> Any:
        return np.quantile(values, q, method="inverted_cdf", axis=-1) if values.size else math.nan

    return statistic


def _share_pct(values: np.ndarray) -> Any:
    return values.mean(axis=-1) * 100 if values.size else math.nan


METRICS: tuple[Metric, ...] = (
    Metric("availability_pct", "availability", "%", "higher", _successes, _share_pct),
    Metric("e2e_p50_ms", "end-to-end p50", "ms", "lower", _seconds_ms("e2e_s"), _quantile(0.5), 0.5),
    Metric("e2e_p95_ms", "end-to-end p95", "ms", "lower", _seconds_ms("e2e_s"), _quantile(0.95), 0.95),
    Metric("e2e_p99_ms", "end-to-end p99", "ms", "lower", _seconds_ms("e2e_s"), _quantile(0.99), 0.99),
    Metric(
        "ttft_p95_ms", "time to first token p95", "ms", "lower", _seconds_ms("ttft_s"), _quantile(0.95), 0.95
    ),
    Metric("itl_p95_ms", "inter-token latency p95", "ms", "lower", _gaps_ms, _quantile(0.95), 0.95),
)
# A quantile q is compared only with at least MIN_TAIL observations above it in each run (n * (1 - q)):
# below that, a p99 is one request's latency and its bootstrap interval is too narrow to trust.
MIN_TAIL = 5
# Resamples drawn at once: bounds the memory of one block to about this many observations times 8 bytes.
_BLOCK_OBSERVATIONS = 4_000_000
# The smallest difference worth flagging, per unit: percentage points of availability; for latencies a share
# of the baseline's value, and never under MIN_EFFECT_MS (a few ms is scheduling noise between two runs).
MIN_EFFECT = {"%": 0.1, "ms": 0.1}
MIN_EFFECT_MS = 5.0


@dataclass
class MetricDiff:
    """One metric of one run against the baseline: both values, their difference (candidate - baseline)
    with its bootstrap interval, and the finding."""

    metric: str
    label: str
    unit: str
    better: Direction
    baseline: float
    candidate: float
    difference: float
    low: float
    high: float
    observations: tuple[int, int]
    finding: Finding
    fails: bool = False

    @property
    def min_effect(self) -> float:
        return min_effect(self.unit, self.baseline)


def min_effect(unit: str, baseline: float) -> float:
    """The smallest difference of a metric in `unit` worth flagging, against its baseline value."""
    if unit == "ms":
        return max(MIN_EFFECT["ms"] * abs(baseline), MIN_EFFECT_MS)
    return MIN_EFFECT.get(unit, 0.0)


@dataclass
class Comparison:
    """The comparison of `runs` (the first is the baseline): metric differences per candidate, recovery per
    fault, and how it decided."""

    runs: list[str]
    paths: list[str]
    diffs: dict[str, list[MetricDiff]]
    recovery: list[dict[str, Any]]
    resamples: int
    confidence: float
    seed: int
    fail_on: dict[str, float]
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def regressions(self) -> list[MetricDiff]:
        return [d for diffs in self.diffs.values() for d in diffs if d.finding == "regression"]

    @property
    def failed(self) -> bool:
        return any(d.fails for d in self.regressions)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["failed"] = self.failed
        data["method"] = method_sentence(self)
        return _json_safe(data)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def parse_fail_on(items: Sequence[str]) -> dict[str, float]:
    """`metric=threshold` pairs (`e2e_p95_ms=50`, `availability_pct=0.5`): a regression of that metric larger
    than the threshold (in its unit) fails the comparison."""
    names = {m.name for m in METRICS}
    thresholds: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in names:
            raise ConfigError(
                f"--fail-on {item!r}: give METRIC=THRESHOLD with METRIC one of {', '.join(sorted(names))}"
            )
        try:
            thresholds[name] = float(text)
        except ValueError:
            raise ConfigError(f"--fail-on {item!r}: {text!r} is not a number") from None
        if not math.isfinite(thresholds[name]) or thresholds[name] < 0:
            raise ConfigError(f"--fail-on {item!r}: the threshold must be a number >= 0")
    return thresholds


def _draws(metric: Metric, seen: Observations, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The statistic on `resamples` resamples of the run's requests (with replacement), each request with
    all of its observations; drawn in blocks so that memory stays bounded whatever the run's size."""
    n = seen.requests
    if bool((seen.lengths == 1).all()):
        block = max(1, _BLOCK_OBSERVATIONS // max(n, 1))
        parts = [
            np.asarray(metric.statistic(seen.values[rng.integers(0, n, size=(min(block, resamples - i), n))]))
            for i in range(0, resamples, block)
        ]
        return np.concatenate(parts)
    starts = np.concatenate([[0], np.cumsum(seen.lengths)[:-1]])
    out = np.empty(resamples)
    for i in range(resamples):
        picks = rng.integers(0, n, size=n)
        lengths = seen.lengths[picks]
        # The observations of each picked request: its start, then consecutive positions.
        index = np.repeat(starts[picks] - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        out[i] = float(metric.statistic(seen.values[index]))
    return out


def _bootstrap(
    metric: Metric, base: Observations, cand: Observations, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """`resamples` differences of the statistic on independent resamples of each run's requests."""
    return _draws(metric, cand, resamples, rng) - _draws(metric, base, resamples, rng)


def _too_few(metric: Metric, *observed: Observations) -> bool:
    """Whether a quantile metric has fewer than MIN_TAIL observations above it in some run."""
    if metric.quantile is None:
        return False
    return any(o.values.size * (1 - metric.quantile) < MIN_TAIL for o in observed)


def _finding(metric: Metric, diff: float, low: float, high: float, baseline: float) -> Finding:
    if not (math.isfinite(diff) and math.isfinite(low) and math.isfinite(high)):
        return "not comparable"
    if low <= 0 <= high or abs(diff) < min_effect(metric.unit, baseline):
        return "no difference"
    worse = diff > 0 if metric.better == "lower" else diff < 0
    return "regression" if worse else "improvement"


def _compare_metric(
    metric: Metric, base: RunData, cand: RunData, resamples: int, confidence: float, rng: np.random.Generator
) -> MetricDiff:
    a, b = metric.values(base.samples), metric.values(cand.samples)
    value_a, value_b = float(metric.statistic(a.values)), float(metric.statistic(b.values))
    low = high = math.nan
    too_few = _too_few(metric, a, b)
    if a.values.size and b.values.size and not too_few:
        spread = _bootstrap(metric, a, b, resamples, rng)
        tail = (1 - metric_confidence(confidence)) / 2 * 100
        low, high = (float(x) for x in np.percentile(spread, [tail, 100 - tail]))
    diff = value_b - value_a
    finding = "not comparable" if too_few else _finding(metric, diff, low, high, value_a)
    return MetricDiff(
        metric.name, metric.label, metric.unit, metric.better, value_a, value_b, diff, low, high,
        (int(a.values.size), int(b.values.size)), finding,
    )  # fmt: skip


def metric_confidence(confidence: float) -> float:
    """Each metric's interval level: `confidence` shared by every metric of a comparison (Bonferroni), so
    that all of a run's intervals together cover with at least `confidence`."""
    return 1 - (1 - confidence) / len(METRICS)


def _recovery_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """Per fault (matched by its order, kind and target), each run's time to detect and recover and its
    requests lost; one observation per run and fault, so these are shown, never flagged."""
    rows: dict[tuple[int, str, str], dict[str, Any]] = {}
    for run in runs:
        recovery = run.recovery
        for index, fault in enumerate(recovery.to_dict("records")):
            key = (index, str(fault["kind"]), str(fault["target"]))
            row = rows.setdefault(key, {"fault": index + 1, "kind": key[1], "target": key[2], "runs": {}})
            row["runs"][run.run_id] = {
                "time_to_detect_s": _number(fault.get("time_to_detect_s")),
                "time_to_recover_s": _number(fault.get("time_to_recover_s")),
                "requests_lost": int(fault.get("requests_lost") or 0),
            }
    return list(rows.values())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def compare_runs(
    run_dirs: Sequence[Path | str],
    *,
    fail_on: Mapping[str, float] | None = None,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare each run after the first with the first (see the module docstring). `fail_on` maps a metric
    to the largest regression (in its unit) that still passes; a metric without one fails on any flagged
    regression. Raises ConfigError for fewer than two runs or a run without client samples."""
    if len(run_dirs) < 2:
        raise ConfigError("give at least two run directories: the baseline first, then the runs to compare")
    if not 0.5 <= confidence < 1 or resamples < 100:
        raise ConfigError("confidence must be in [0.5, 1) and resamples at least 100")
    runs = [RunData.load(path) for path in run_dirs]
    for run in runs:
        if run.samples.empty:
            raise ConfigError(
                f"{run.path} has no client samples (requests.jsonl); there is nothing to compare"
            )
    names = [r.run_id for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(
            f"two of the runs are named alike ({', '.join(twice)}): a comparison names runs by their "
            "folder; give each run once, from folders named apart"
        )
    thresholds = dict(fail_on or {})
    rng = np.random.default_rng(seed)
    base = runs[0]
    diffs: dict[str, list[MetricDiff]] = {}
    for cand in runs[1:]:
        found = [_compare_metric(m, base, cand, resamples, confidence, rng) for m in METRICS]
        for d in found:
            d.fails = d.finding == "regression" and abs(d.difference) > thresholds.get(d.metric, 0.0)
        diffs[cand.run_id] = found
    return Comparison(
        runs=[r.run_id for r in runs],
        paths=[str(r.path) for r in runs],
        diffs=diffs,
        recovery=_recovery_rows(runs),
        resamples=resamples,
        confidence=confidence,
        seed=seed,
        fail_on=thresholds,
    )


def method_sentence(comparison: Comparison) -> str:
    effects = (
        f"{MIN_EFFECT['%']:g} percentage points of availability; "
        f"{MIN_EFFECT['ms']:.0%} of a baseline latency, and at least {MIN_EFFECT_MS:g} ms"
    )
    level = metric_confidence(comparison.confidence)
    return (
        f"Each run is compared with the first ({comparison.runs[0]}). For each metric the requests of both "
        f"runs were resampled with replacement {comparison.resamples} times (seed {comparison.seed}; a "
        "request's token gaps stay together); the interval of the difference (candidate - baseline) is the "
        f"percentile interval of those resamples, at {level:.1%} each so that the {len(METRICS)} metrics' "
        f"intervals together hold at {comparison.confidence:.0%} (Bonferroni). A difference is flagged only "
        "when its interval excludes zero and it is at least the smallest effect worth reporting "
        f"({effects}). A quantile with fewer than {MIN_TAIL} observations above it in a run is not "
        "comparable "
        "(a p99 of 40 requests is one request). Recovery times are one observation per fault and run: shown "
        "side by side, never flagged."
    )


def _value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "\u2013"
    return f"{value:.2f} %" if unit == "%" else f"{value:.0f} ms"


def _diff_text(d: MetricDiff) -> str:
    if not math.isfinite(d.difference):
        return "\u2013"
    unit = " points" if d.unit == "%" else " ms"
    digits = 2 if d.unit == "%" else 0
    return (
        f"{d.difference:+.{digits}f}{unit} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"
        if math.isfinite(d.low)
        else f"{d.difference:+.{digits}f}{unit}"
    )


def _cdf_figure(runs: Sequence[RunData]) -> ReportFigure:
    fig, ax = cdf_figure(
        "End-to-end latency distribution of each run (client, successful requests)", "end-to-end latency (ms)"
    )
    for index, run in enumerate(runs):
        values = _seconds_ms("e2e_s")(run.samples).values
        if values.size:
            draw_cdf(
                fig, ax, values, f"{'baseline ' if index == 0 else ''}{run.run_id}: {values.size} requests"
            )
    ax.legend(loc="lower right", fontsize="small")
    return fig


def render_comparison(comparison: Comparison, runs: Sequence[RunData]) -> str:
    """The comparison as one self-contained HTML page."""
    e = html.escape
    colours = {"regression": "#ffebe9", "improvement": "#dafbe1"}
    sections = []
    for run_id, diffs in comparison.diffs.items():
        rows = "".join(
            f'<tr style="background:{colours.get(d.finding, "none")}"><td>{e(d.label)} ({e(d.unit)})</td>'
            f"<td>{_value(d.baseline, d.unit)}</td><td>{_value(d.candidate, d.unit)}</td>"
            f"<td>{e(_diff_text(d))}</td><td>{d.observations[0]} / {d.observations[1]}</td>"
            f"<td><b>{e(d.finding)}</b>{' (fails --fail-on)' if d.fails else ''}</td></tr>"
            for d in diffs
        )
        sections.append(
            f"<h2>{e(run_id)} against the baseline</h2><table><thead><tr><th>metric (unit)</th>"
            "<th>baseline</th>"
            f"<th>this run</th><th>difference [{metric_confidence(comparison.confidence):.1%} interval]</th>"
            "<th>observations (baseline / this run)</th><th>finding</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    recovery_rows = "".join(
        f"<tr><td>{r['fault']}</td><td>{e(r['kind'])} {e(r['target'])}</td>"
        + "".join(
            "<td>"
            + (
                f"detect {format_ms(m['time_to_detect_s'])}, recover {format_ms(m['time_to_recover_s'])}, "
                f"{m['requests_lost']} lost"
                if (m := r["runs"].get(run_id))
                else "\u2013"
            )
            + "</td>"
            for run_id in comparison.runs
        )
        + "</tr>"
        for r in comparison.recovery
    )
    recovery = (
        "<h2>Recovery per fault</h2><table><thead><tr><th>fault</th><th>kind and target</th>"
        + "".join(f"<th>{e(run_id)}</th>" for run_id in comparison.runs)
        + f"</tr></thead><tbody>{recovery_rows}</tbody></table>"
        if comparison.recovery
        else "<p>No faults in these runs.</p>"
    )
    verdict = (
        f"{len(comparison.regressions)} regression(s) flagged"
        + (", beyond --fail-on: the comparison fails." if comparison.failed else ".")
        if comparison.regressions
        else "No regression flagged."
    )
    listed = "".join(f"<li>{e(run_id)} <span style='color:#59636e'>({e(path)})</span></li>"
                     for run_id, path in zip(comparison.runs, comparison.paths, strict=True))  # fmt: skip
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>labkit comparison</title>'
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2328;max-width:1100px}"
        "table{border-collapse:collapse;font-size:0.9rem;margin-bottom:1rem}"
        "th,td{border-bottom:1px solid #d1d9e0;padding:0.35rem 0.6rem;text-align:left}th{background:#f6f8fa}"
        "p.how{color:#59636e;font-size:0.9rem}</style></head><body>"
        f"<h1>Comparison of {len(comparison.runs)} runs</h1><p><b>{e(verdict)}</b></p>"
        f"<ol>{listed}</ol><p class='how'>{e(method_sentence(comparison))}</p>"
        + "".join(sections)
        + recovery
        + _cdf_figure(runs)._repr_html_()
        + f"<p class='how'>Made {e(comparison.created_at)}.</p></body></html>"
    )


def write_comparison(comparison: Comparison, out_dir: Path | str) -> Path:
    """Write `<out_dir>/compare-<stamp>.html` and `.json` (atomically); returns the HTML's path."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    base = directory / f"compare-{stamp}"
    runs = [RunData.load(path) for path in comparison.paths]
    write_atomically(base.with_suffix(".json"), json.dumps(comparison.to_json(), indent=2) + "\n")
    page = base.with_suffix(".html")
    write_atomically(page, render_comparison(comparison, runs))
    return page
