"""Prometheus' open files and the TSDB blocks that hold them (`python -m bench --only tsdb_blocks`, not CI).

Each block Prometheus has written to disk keeps its files open (the index and its chunk segments,
memory-mapped), so its open descriptors step up with every block until compaction and retention keep the
number of blocks level. The soak sees the first steps only: the lab keeps at least 144 minutes of samples
(its slowest alert's window), so no hour-long soak reaches the level. This suite runs the same Prometheus
binary on a time scale that does: scraping itself every second with 1-minute blocks, 3-minute blocks at
most and 6 minutes of retention, sampled every 10 s for 15 minutes. It measures whether the descriptors
outside the blocks stay flat, whether the blocks stay within `blocks_bound` (the figure the soak states for
the lab's settings), and whether all descriptors level off once retention starts dropping blocks.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil

from bench._common import ROOT, Row, Target, free_ports

# A block's directory is named by its ULID: 26 characters of Crockford's base32.
_BLOCK_DIR = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
# Prometheus 2.x: blocks are compacted in ranges of the minimum block duration times 3, 9, ..., up to
# the maximum block duration, which defaults to a tenth of the retention time (at most 31 days).
_RANGE_STEP = 3
_DEFAULT_MAX_BLOCK_S = 31 * 86400.0
FILES_PER_BLOCK = 2  # its index, and one chunk segment (a segment holds up to 512 MiB)
BLOCKS_LOADED = "prometheus_tsdb_blocks_loaded"


def block_files(procs: list[psutil.Process]) -> int:
    """The open regular files of `procs` that lie in a TSDB block's directory (`<data>/<ULID>/...`)."""
    count = 0
    for proc in procs:
        try:
            paths = [f.path for f in proc.open_files()]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        count += sum(1 for path in paths if any(_BLOCK_DIR.match(part) for part in Path(path).parts))
    return count


def block_ranges_s(retention_s: float, min_block_s: float, max_block_s: float | None = None) -> list[float]:
    """The block lengths Prometheus writes and compacts into, shortest first, as its TSDB derives them."""
    if max_block_s is None:
        max_block_s = min(_DEFAULT_MAX_BLOCK_S, retention_s / 10)
    max_block_s = max(max_block_s, min_block_s)
    ranges = [min_block_s]
    while ranges[-1] * _RANGE_STEP <= max_block_s:
        ranges.append(ranges[-1] * _RANGE_STEP)
    return ranges


def blocks_bound(retention_s: float, min_block_s: float, max_block_s: float | None = None) -> int:
    """The most blocks a Prometheus keeps once retention drops them: the retention in its longest blocks, one
    more that retention has only partly passed, one being written, and the shorter blocks that wait to fill
    the next longer range (two of each)."""
    ranges = block_ranges_s(retention_s, min_block_s, max_block_s)
    return math.ceil(retention_s / ranges[-1]) + 2 + 2 * (len(ranges) - 1)


def _prometheus_blocks(url: str) -> float | None:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(BLOCKS_LOADED + " "):
            return float(line.split()[1])
    return None


def _slope_per_h(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    ts = [t / 3600 for t, _ in points]
    ys = [y for _, y in points]
    tm, ym = sum(ts) / len(ts), sum(ys) / len(ys)
    den = sum((t - tm) ** 2 for t in ts)
    return sum((t - tm) * (y - ym) for t, y in zip(ts, ys, strict=True)) / den if den else None


def measure(workdir: Path, scale: Scale) -> dict[str, Any]:
    """Runs a bare Prometheus that scrapes itself every second, sampling its descriptors and blocks."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus)")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: self, static_configs: [{{targets: ['127.0.0.1:{port}']}}]}}]\n"
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.retention.time={scale.retention}",
        f"--storage.tsdb.min-block-duration={scale.min_block}",
        f"--storage.tsdb.max-block-duration={scale.max_block}",
        "--log.level=warn",
    ]
    samples: list[dict[str, float | None]] = []
    with (workdir / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            start = time.monotonic()
            while time.monotonic() - start < scale.duration_s:
                time.sleep(scale.every_s)
                if proc.poll() is not None:
                    log_path = workdir / "prometheus.log"
                    raise RuntimeError(f"prometheus exited ({proc.returncode}); see {log_path}")
                procs = [psutil.Process(proc.pid)]
                fds = procs[0].num_fds()
                in_blocks = block_files(procs)
                try:
                    blocks = _prometheus_blocks(url)
                except httpx.HTTPError:
                    blocks = None
                t_s = round(time.monotonic() - start, 1)
                sample = {"t_s": t_s, "fds": fds, "block_fds": in_blocks, "other_fds": fds - in_blocks}
                samples.append({**sample, "blocks": blocks})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {"argv": argv[1:], "samples": samples}


@dataclass(frozen=True)
class Scale:
    """The time scale of the run: Prometheus' block lengths and retention, and how long it is sampled. The
    bound is reached once retention has passed after the first block: in the run's second half."""

    min_block: str = "1m"
    max_block: str = "3m"
    retention: str = "6m"
    duration_s: float = 900.0
    every_s: float = 10.0
    warmup_s: float = 60.0  # Prometheus opening its WAL, head and listeners: not counted as growth


SMOKE = Scale(duration_s=30.0, every_s=5.0, warmup_s=10.0)


def rows_of(record: dict[str, Any], scale: Scale) -> list[Row]:
    from labkit.durations import prometheus_duration_s

    samples = record["samples"]
    second_half = [s for s in samples if s["t_s"] >= scale.duration_s / 2]
    warm = [s for s in samples if s["t_s"] >= scale.warmup_s]
    bound = blocks_bound(
        prometheus_duration_s(scale.retention),
        prometheus_duration_s(scale.min_block),
        prometheus_duration_s(scale.max_block),
    )
    blocks = [s["blocks"] for s in samples if s["blocks"] is not None]
    setting = f"blocks of {scale.min_block} to {scale.max_block}, retention {scale.retention}"
    detail = {"settings": asdict(scale), "samples": len(samples), "bound": bound}
    fds_late = [s["fds"] for s in second_half]
    others = [s["other_fds"] for s in warm]
    return [
        Row(
            name="tsdb_blocks_max",
            what=f"bare Prometheus scraping itself every second ({setting}): most blocks loaded at once",
            unit="blocks",
            value=max(blocks) if blocks else None,
            target=Target("value_max", bound, f"<= {bound} (blocks_bound)"),
            detail=detail,
        ),
        Row(
            name="tsdb_other_fds_growth_per_h",
            what=f"the same Prometheus ({setting}): growth of its descriptors outside its blocks' files, "
            f"after its first {scale.warmup_s:g} s",
            unit="fds/h",
            value=_slope_per_h([(s["t_s"], s["other_fds"]) for s in warm]),
            target=Target("value_max", 1.0, "no growth (< 1 fd/h)"),
            detail={**detail, "range": [min(others), max(others)] if others else None},
        ),
        Row(
            name="tsdb_fds_growth_second_half_per_h",
            what=f"the same Prometheus ({setting}): growth of all its descriptors in the run's second half, "
            "once retention drops blocks",
            unit="fds/h",
            value=_slope_per_h([(s["t_s"], s["fds"]) for s in second_half]),
            detail={**detail, "range": [min(fds_late), max(fds_late)] if fds_late else None},
        ),
    ]


KEPT_SAMPLES = ROOT / "docs" / "soak" / "tsdb_blocks_samples.csv"  # beside the soak's, for reliability.md


def run(workdir: Path, smoke: bool) -> list[Row]:
    """The suite: SMOKE checks the code; the full run keeps its samples in KEPT_SAMPLES."""
    scale = SMOKE if smoke else Scale()
    with tempfile.TemporaryDirectory(prefix="labkit-tsdb-", dir=workdir) as tmp:
        record = measure(Path(tmp), scale)
    if not smoke:
        KEPT_SAMPLES.write_text(pd.DataFrame(record["samples"]).to_csv(index=False))
    return rows_of(record, scale)
