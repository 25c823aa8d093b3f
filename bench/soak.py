"""The soak (`python -m bench --only soak`): the lab for an hour after a 45-minute warm-up on the real model,
with a seeded random fault every few minutes and remediation on, in back-to-back experiments (one run is
capped at MAX_RUN_S, an hour), sampled every minute across them: each service's RSS, open file descriptors
and threads (its process and children, not another service), the disk used by the lab's logs, Prometheus'
TSDB, Alertmanager's data and the run directory, the requests so far and how many succeeded. At the end: the
growth per hour of each figure after the warm-up (a least-squares slope over the samples, so one restart's
dip does not decide it), and the pages that no fault explains (labkit.measure.alerting, as the report
counts them).

Writes soak.json, soak_samples.csv and soak.png into the last experiment's run directory, and rows for
bench/results.json. Not a test, and not CI: 105 minutes on a machine with nothing else busy. `--smoke` runs
a minute on the sim engine to check the code.

    .venv/bin/python -m bench --only soak
    .venv/bin/python -m bench.soak --duration-s 600           # ten minutes, by hand
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench._common import ROOT, Row, Target, free_ports, process_tree
from bench.tsdb_blocks import BLOCKS_LOADED, block_files, blocks_bound
from labkit import LabConfig, open_lab
from labkit.chaos import (
    MAX_RUN_S,
    ExperimentLoad,
    ExperimentSpec,
    RemediationPolicy,
    SteadyState,
    applicable_faults,
    random_schedule,
    run_experiment,
)
from labkit.durations import prometheus_duration_s
from labkit.rundir import RunDirectory, RunFile

RESULT_FILE = "soak.json"
# The samples' rows that are not a service's process: Prometheus' own /metrics (beside its process' row), the
# disk use, and a sample that failed.
PROMETHEUS_SELF_ROW = "prometheus_self"
DISK_ROW = "disk"
ERROR_ROW = "error"
SAMPLES_FILE = "soak_samples.csv"
PLOT_FILE = "soak.png"
RSS_GROWTH_TARGET_PCT_PER_H = 10.0


@dataclass(frozen=True)
class SoakSettings:
    # An hour measured after the warm-up. The warm-up was declared before the soak of 2026-12-04, from the
    # one of 2026-12-03, whose Prometheus held no more heap from the OS after minute 38; the 2026-12-04 soak
    # showed it keeps growing while its rule windows (up to 144 min) fill (docs/reliability.md, "An hour on
    # the real model").
    warmup_s: float = 2700.0
    duration_s: float = warmup_s + 3600.0
    rate: float = 1.0  # the alert soak's light load: the model keeps up between faults
    max_tokens: int = 16
    fault_gap_s: float = 240.0  # mean gap between two faults: one every few minutes
    fault_duration_s: tuple[float, float] = (10.0, 40.0)
    sample_s: float = 60.0
    engine: str = "llama"
    seed: int = 20


SMOKE = SoakSettings(duration_s=60, rate=2, max_tokens=8, fault_gap_s=15, fault_duration_s=(3, 6),
                     sample_s=5, warmup_s=10, engine="sim")  # fmt: skip


def _usage(procs: list[psutil.Process]) -> dict[str, float]:
    """RSS, and its file-backed part (Linux: resident pages of mapped files and shared memory, which the
    kernel can drop: Prometheus' memory-mapped TSDB chunks), open file descriptors (those that hold TSDB
    blocks' files apart: Prometheus keeps each block on disk open) and threads."""
    rss = shared = fds = threads = 0
    cpu_s = 0.0
    for proc in procs:
        try:
            with proc.oneshot():
                mem = proc.memory_info()
                rss += mem.rss
                shared += getattr(mem, "shared", 0)
                fds += proc.num_fds()
                threads += proc.num_threads()
                times = proc.cpu_times()
                cpu_s += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    in_blocks = block_files(procs)
    return {"rss_bytes": rss, "rss_anon_bytes": rss - shared, "rss_file_bytes": shared, "fds": fds,
            "block_fds": in_blocks, "other_fds": fds - in_blocks, "threads": threads,
            "cpu_s": round(cpu_s, 2)}  # fmt: skip


# Prometheus' own view of its memory and work, read from its /metrics: the Go heap in use, what the Go
# runtime holds from the OS for it, the heap size that triggers the next collection, the TSDB head, and
# the time one evaluation of every rule group takes.
PROMETHEUS_SELF = {
    "go_memstats_heap_inuse_bytes": "heap_inuse_bytes",
    "go_memstats_heap_sys_bytes": "heap_sys_bytes",
    "go_memstats_next_gc_bytes": "next_gc_bytes",
    "prometheus_tsdb_head_series": "head_series",
    "prometheus_tsdb_head_chunks": "head_chunks",
    "prometheus_rule_group_last_duration_seconds": "rule_groups_s",
    BLOCKS_LOADED: "blocks_loaded",
}


def prometheus_self(url: str) -> dict[str, float]:
    """PROMETHEUS_SELF's figures from Prometheus' /metrics (a series with labels is summed)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            column = PROMETHEUS_SELF.get(sample.name)
            if column is not None:
                figures[column] = figures.get(column, 0.0) + sample.value
    return figures


def _du(path: Path) -> int:
    total = 0
    for item in path.rglob("*") if path.exists() else ():
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:
            continue
    return total


class Sampler:
    """Samples every `every_s` in its own thread until stopped; one row per service per sample, and one
    `disk` row. The soak's legs (`run_paths`, appended as each starts) count together: their requests and
    the disk their run directories use."""

    def __init__(self, lab: Any, every_s: float) -> None:
        self.lab, self.every_s = lab, every_s
        self.run_paths: list[Path] = []
        self.rows: list[dict[str, Any]] = []
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()  # the last one

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        t_s = round(time.time() - self.start, 1)
        try:
            services = self.lab.backend.status()
        except Exception as exc:  # the manager restarting: that sample has no per-service figures
            self.rows.append({"t_s": t_s, "service": ERROR_ROW, "detail": str(exc)})
            services = []
        roots = {svc.pid for svc in services if svc.pid}
        for svc in services:
            if svc.pid:
                usage = _usage(process_tree(svc.pid, roots - {svc.pid}))
                self.rows.append({"t_s": t_s, "service": svc.name, "pid": svc.pid, **usage})
        try:
            self.rows.append(
                {
                    "t_s": t_s,
                    "service": PROMETHEUS_SELF_ROW,
                    **prometheus_self(self.lab.config.prometheus_url),
                }
            )
        except httpx.HTTPError as exc:  # Prometheus restarting
            self.rows.append({"t_s": t_s, "service": ERROR_ROW, "detail": f"prometheus /metrics: {exc}"})
        lab_dir = self.lab.backend.lab
        runs = list(self.run_paths)
        requests = [r for path in runs for r in RunDirectory(path).read_jsonl(RunFile.REQUESTS, problems=[])]
        self.rows.append(
            {
                "t_s": t_s,
                "service": DISK_ROW,
                "logs_bytes": _du(lab_dir.logs),
                "tsdb_bytes": _du(lab_dir.prometheus_dir / "data"),
                "alertmanager_bytes": _du(lab_dir.alertmanager_dir),
                "run_bytes": sum(_du(path) for path in runs),
                "requests": len(requests),
                "requests_ok": sum(1 for r in requests if r.get("ok")),
            }
        )


def growth_per_hour(frame: pd.DataFrame, column: str, warmup_s: float) -> dict[str, float | None]:
    """Least-squares slope of `column` against time after `warmup_s`, per hour, and relative to the mean
    after warm-up (percent per hour)."""
    after = frame[frame["t_s"] >= warmup_s][["t_s", column]].dropna()
    if len(after) < 3:
        return {"per_hour": None, "pct_per_hour": None, "mean": None}
    t = after["t_s"].astype(float) / 3600.0
    y = after[column].astype(float)
    slope = float(((t - t.mean()) * (y - y.mean())).sum() / ((t - t.mean()) ** 2).sum())
    mean = float(y.mean())
    return {"per_hour": slope, "pct_per_hour": 100 * slope / mean if mean else None, "mean": mean}


def cpu_cores(rows: pd.DataFrame, warmup_s: float) -> float | None:
    """The mean CPU a service used after `warmup_s`, in cores: the CPU seconds between consecutive samples
    of the same process (a restart starts a new count) over the time they cover."""
    after = rows[rows["t_s"] >= warmup_s].sort_values("t_s")
    same = after["pid"].eq(after["pid"].shift())
    used = after["cpu_s"].diff()[same].clip(lower=0).sum()
    elapsed = after["t_s"].diff()[same].sum()
    return float(used / elapsed) if elapsed > 0 else None


def false_pages(run_paths: list[Path]) -> int | None:
    """Pages that no fault explains over the soak's legs, as the report counts them; None when a leg has no
    alert data."""
    from labkit.report import RunData
    from labkit.report.alert_data import alert_measures

    counts = [alert_measures(RunData.load(path)) for path in run_paths]
    return None if any(m is None for m in counts) else sum(m.false_page_count for m in counts if m)


def lab_blocks_bound(config: LabConfig) -> dict[str, Any]:
    """The most TSDB blocks the lab's Prometheus keeps (`blocks_bound`) at its retention and block length."""
    retention, block = config.prometheus_retention_time, config.prometheus_block_duration
    bound = blocks_bound(prometheus_duration_s(retention), prometheus_duration_s(block))
    return {"blocks": bound, "retention": retention, "block_duration": block}


def legs(duration_s: float) -> list[float]:
    """The soak's back-to-back experiments: as few as the cap on one run (MAX_RUN_S) allows, of equal
    length."""
    count = math.ceil(duration_s / MAX_RUN_S)
    return [duration_s / count] * count


def process_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The samples of the services' processes (RSS, descriptors, threads, CPU), without the other rows."""
    return frame[~frame["service"].isin([DISK_ROW, ERROR_ROW, PROMETHEUS_SELF_ROW])]


def plot(frame: pd.DataFrame, path: Path, warmup_s: float) -> str:
    """RSS per service, open files per service, Prometheus' memory by its parts, and disk use against time;
    returns the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    procs = process_rows(frame)
    disk = frame[frame["service"] == DISK_ROW]
    prometheus = frame[frame["service"] == "prometheus"]
    own = frame[frame["service"] == PROMETHEUS_SELF_ROW]
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    for name, rows in procs.groupby("service"):
        axes[0].plot(rows["t_s"] / 60, rows["rss_bytes"] / 2**20, label=str(name))
        line = axes[1].plot(rows["t_s"] / 60, rows["fds"], label=str(name))[0]
        if "block_fds" in rows and rows["block_fds"].fillna(0).gt(0).any():
            axes[1].plot(rows["t_s"] / 60, rows["block_fds"], linestyle="--", color=line.get_color(),
                         label=f"{name}: TSDB blocks' files")  # fmt: skip
    for rows, column, label in (
        (prometheus, "rss_anon_bytes", "RSS, anonymous"),
        (prometheus, "rss_file_bytes", "RSS, file-backed (mapped TSDB chunks)"),
        (own, "heap_sys_bytes", "Go heap held from the OS"),
        (own, "heap_inuse_bytes", "Go heap in use"),
    ):
        if column in rows and rows[column].notna().any():
            axes[2].plot(rows["t_s"] / 60, rows[column] / 2**20, label=label)
    for column, label in (
        ("logs_bytes", "logs"),
        ("tsdb_bytes", "Prometheus TSDB"),
        ("run_bytes", "run dir"),
    ):
        axes[3].plot(disk["t_s"] / 60, disk[column] / 2**20, label=label)
    ylabels = ("RSS (MiB)", "open file descriptors", "Prometheus' memory (MiB)", "disk used (MiB)")
    for ax, ylabel in zip(axes, ylabels, strict=True):
        ax.set_ylabel(ylabel)
        ax.axvline(warmup_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    axes[3].set_xlabel("minutes since the soak started")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    samples = len(disk)
    blocks = "block_fds" in procs and procs["block_fds"].fillna(0).gt(0).any()
    return (
        f"{samples} samples over {disk['t_s'].max() / 60:.0f} min: RSS and open file descriptors of each "
        "service (its process and children, not another service"
        + ("; dashed: those holding the files of Prometheus' TSDB blocks on disk" if blocks else "")
        + "); Prometheus' RSS split into its anonymous "
        "and file-backed parts, beside its Go heap in use and held from the OS (its own /metrics); and the "
        "disk used by the lab's logs, Prometheus' TSDB and the run directory; the dotted line ends the "
        f"{warmup_s / 60:.3g}-minute warm-up before which growth is not counted"
    )


def replot(folder: Path) -> str:
    """Draw the plot of a finished soak (its run directory, or docs/soak/) again from its samples, and put
    the new caption in its record."""
    kept = RunDirectory(folder)  # read and written as a run directory's files, never stamped
    record = kept.read_json(RESULT_FILE)
    frame = pd.read_csv(kept.file(SAMPLES_FILE))
    record["plot_caption"] = plot(frame, kept.file(PLOT_FILE), float(record["settings"]["warmup_s"]))
    kept.write_json(RESULT_FILE, record)
    return str(record["plot_caption"])


def soak(settings: SoakSettings, out: Path, say: Any = print) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="labkit-soak-"))
    faults: list[Any] = []
    verdicts: list[str] = []
    names = [name for name in LabConfig.model_fields if name.endswith("_port")]
    ports: dict[str, Any] = dict(zip(names, free_ports(len(names)), strict=True))
    try:
        with (
            open_lab(root, engine=settings.engine, say=say, **ports) as lab,
            Sampler(lab, settings.sample_s) as sampler,
        ):
            lengths = legs(settings.duration_s)
            tsdb_bound = lab_blocks_bound(lab.config)
            say(f"soak: {settings.duration_s:g} s in {len(lengths)} back-to-back experiment(s)")
            for leg, length in enumerate(lengths):
                schedule = random_schedule(
                    settings.seed + leg,
                    length,
                    mean_gap_s=settings.fault_gap_s,
                    fault_duration_s=settings.fault_duration_s,
                    applicable=applicable_faults(lab.config),
                )
                spec = ExperimentSpec(
                    schedule=schedule,
                    duration_s=length,
                    load=ExperimentLoad(rate=settings.rate, max_tokens=settings.max_tokens),
                    steady_state=SteadyState(enabled=False),
                    remediation=RemediationPolicy(
                        target="wrapper",
                        threshold_s=2.0,
                        window_s=30,
                        interval_s=5,
                        breaches_to_act=3,
                        cooldown_s=60,
                    ),
                    scenario="soak",
                )
                run_dir = RunDirectory.create(out, "soak")
                say(f"soak leg {leg + 1}: {length:g} s, {len(schedule.faults)} faults, into {run_dir.path}")
                sampler.run_paths.append(run_dir.path)
                result = run_experiment(lab.lab_dir, spec, run_dir=run_dir, say=say)
                faults += schedule.faults
                verdicts.append(result.verdict)
            services = {s.name: {"restarts": s.restarts, "state": s.state} for s in lab.backend.status()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    frame = pd.DataFrame(sampler.rows)
    frame.to_csv(run_dir.file(SAMPLES_FILE), index=False)
    caption = plot(frame, run_dir.file(PLOT_FILE), settings.warmup_s)
    growth: dict[str, Any] = {}
    for name, rows in process_rows(frame).groupby("service"):
        growth[str(name)] = {
            col: growth_per_hour(rows, col, settings.warmup_s)
            for col in (
                "rss_bytes",
                "rss_anon_bytes",
                "rss_file_bytes",
                "fds",
                "other_fds",
                "block_fds",
                "threads",
            )
        }
        growth[str(name)]["cpu_cores"] = cpu_cores(rows, settings.warmup_s)
    own = frame[frame["service"] == PROMETHEUS_SELF_ROW]
    growth[PROMETHEUS_SELF_ROW] = {
        col: growth_per_hour(own, col, settings.warmup_s) for col in PROMETHEUS_SELF.values()
    }
    disk = frame[frame["service"] == DISK_ROW]
    growth[DISK_ROW] = {
        col: growth_per_hour(disk, col, settings.warmup_s)
        for col in ("logs_bytes", "tsdb_bytes", "alertmanager_bytes", "run_bytes")
    }
    last = disk.iloc[-1].to_dict() if not disk.empty else {}
    record = {
        "settings": settings.__dict__,
        "run_dir": str(run_dir.path),  # the last leg's, which holds the soak's samples, plot and record
        "runs": [str(path) for path in sampler.run_paths],
        "faults": len(faults),
        "fault_kinds": sorted({f.kind for f in faults}),
        "verdicts": verdicts,
        "requests": last.get("requests"),
        "requests_ok": last.get("requests_ok"),
        "false_pages": false_pages(sampler.run_paths),
        "services": services,
        "growth": growth,
        "blocks_loaded_max": (
            float(own["blocks_loaded"].max())
            if "blocks_loaded" in own and own["blocks_loaded"].notna().any()
            else None
        ),
        "tsdb_blocks_bound": tsdb_bound,
        "plot_caption": caption,
    }
    run_dir.write_json(RESULT_FILE, record)
    return record


def rows_of(record: dict[str, Any]) -> list[Row]:
    rows = []
    for service, figures in sorted(record["growth"].items()):
        if service in (DISK_ROW, PROMETHEUS_SELF_ROW):
            continue
        rss = figures["rss_bytes"]
        rows.append(
            Row(
                name=f"soak_rss_growth_{service}_pct_per_h",
                what=f"{service}: RSS growth after warm-up (least-squares slope over the samples)",
                unit="%/h",
                value=rss["pct_per_hour"],
                target=Target(
                    "value_max", RSS_GROWTH_TARGET_PCT_PER_H, f"< {RSS_GROWTH_TARGET_PCT_PER_H:g} %/h"
                ),
                detail={"mean_rss_mib": None if rss["mean"] is None else rss["mean"] / 2**20},
            )
        )
        if "rss_anon_bytes" in figures:
            # No target: the split says whether a growth is the process's own memory or file pages it
            # mapped (page cache the kernel can reclaim, such as Prometheus' memory-mapped TSDB chunks).
            for part, what in (
                ("anon", "anonymous (its own memory)"),
                ("file", "file-backed (mapped files)"),
            ):
                g = figures[f"rss_{part}_bytes"]
                rows.append(
                    Row(
                        name=f"soak_rss_{part}_growth_{service}_mib_per_h",
                        what=f"{service}: growth of the {what} part of its RSS after warm-up",
                        unit="MiB/h",
                        value=None if g["per_hour"] is None else g["per_hour"] / 2**20,
                        detail={"mean_mib": None if g["mean"] is None else g["mean"] / 2**20},
                    )
                )
        if figures.get("cpu_cores") is not None:
            rows.append(
                Row(
                    name=f"soak_cpu_{service}_cores",
                    what=f"{service}: mean CPU after warm-up (its processes, restarts counted anew)",
                    unit="cores",
                    value=figures["cpu_cores"],
                )
            )
        fds = figures["fds"]
        # The files of TSDB blocks on disk are counted apart (Prometheus holds each block's open, so they
        # step up with every block it writes until retention drops blocks: soak_prometheus_blocks_max).
        other = figures.get("other_fds", fds)
        rows.append(
            Row(
                name=f"soak_fd_growth_{service}_per_h",
                what=f"{service}: open file descriptors' growth after warm-up, besides TSDB blocks' files",
                unit="fds/h",
                value=other["per_hour"],
                target=Target("value_max", 1.0, "no growth (< 1 fd/h)"),
                detail={
                    "mean_fds": fds["mean"],
                    "all_fds_per_h": fds["per_hour"],
                    "block_fds_per_h": figures.get("block_fds", {}).get("per_hour"),
                },
            )
        )
    own = record["growth"].get(PROMETHEUS_SELF_ROW, {})
    for column, what in (("heap_inuse_bytes", "Go heap in use"),
                         ("heap_sys_bytes", "Go heap held from the OS"),
                         ("next_gc_bytes", "heap size of the next collection")):  # fmt: skip
        g = own.get(column)
        if g is not None:
            rows.append(
                Row(
                    name=f"soak_prometheus_{column.removesuffix('_bytes')}_mib_per_h",
                    what=f"prometheus, by its own /metrics: growth of its {what} after warm-up",
                    unit="MiB/h",
                    value=None if g["per_hour"] is None else g["per_hour"] / 2**20,
                    detail={"mean_mib": None if g["mean"] is None else g["mean"] / 2**20},
                )
            )
    bound = record.get("tsdb_blocks_bound")
    if bound is not None and record.get("blocks_loaded_max") is not None:
        prometheus = record["growth"].get("prometheus", {})
        rows.append(
            Row(
                name="soak_prometheus_blocks_max",
                what=f"prometheus: most TSDB blocks on disk at once ({bound['block_duration']} blocks, "
                f"{bound['retention']} retention); each keeps its files open",
                unit="blocks",
                value=record["blocks_loaded_max"],
                target=Target("value_max", bound["blocks"], f"<= {bound['blocks']}, what retention keeps"),
                detail={
                    "mean_block_fds": prometheus.get("block_fds", {}).get("mean"),
                    "block_fds_per_h": prometheus.get("block_fds", {}).get("per_hour"),
                },
            )
        )
    rules = own.get("rule_groups_s")
    if rules is not None:
        rows.append(
            Row(
                name="soak_prometheus_rule_evaluation_ms",
                what="prometheus: one evaluation of every rule group, mean after warm-up",
                unit="ms",
                value=None if rules["mean"] is None else rules["mean"] * 1000,
                detail={"growth_ms_per_h": None if rules["per_hour"] is None else rules["per_hour"] * 1000},
            )
        )
    for column, what in (("logs_bytes", "the lab's logs"), ("tsdb_bytes", "Prometheus' TSDB"),
                         ("run_bytes", "the run directory")):  # fmt: skip
        g = record["growth"][DISK_ROW][column]
        rows.append(
            Row(
                name=f"soak_disk_{column.removesuffix('_bytes')}_mib_per_h",
                what=f"disk used by {what}: growth per hour after warm-up",
                unit="MiB/h",
                value=None if g["per_hour"] is None else g["per_hour"] / 2**20,
            )
        )
    rows.append(
        Row(
            name="soak_false_pages",
            what=f"pages no fault explains, over {record['faults']} faults and {record['requests']} requests",
            unit="pages",
            value=record["false_pages"],
            target=Target("value_max", 0, "0"),
        )
    )
    return rows


KEPT_DIR = ROOT / "docs" / "soak"  # the hour's plot, samples and record, which docs/reliability.md shows


def run(workdir: Path, smoke: bool) -> list[Row]:
    """The bench suite: SMOKE on the sim engine, else the hour on the real model, whose plot, samples and
    record are kept in docs/soak/ (the run directory is in the suite's temporary folder)."""
    record = soak(SMOKE if smoke else SoakSettings(), workdir / "runs")
    if not smoke:
        KEPT_DIR.mkdir(parents=True, exist_ok=True)
        for name in (RESULT_FILE, SAMPLES_FILE, PLOT_FILE):
            shutil.copyfile(Path(record["run_dir"]) / name, KEPT_DIR / name)
    return rows_of(record)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration-s", type=float, default=SoakSettings.duration_s)
    ap.add_argument(
        "--warmup-s",
        type=float,
        default=SoakSettings.warmup_s,
        help="growth is measured after this; Prometheus grows while its rule windows (up to 144 min) fill "
        "and until its head is first compacted, at ~45 min with the lab's 30-minute blocks "
        "(docs/reliability.md)",
    )
    ap.add_argument("--engine", default=SoakSettings.engine)
    ap.add_argument("--smoke", action="store_true", help="a minute on the sim engine")
    ap.add_argument(
        "--replot", type=Path, metavar="DIR", help="redraw a finished soak's plot from DIR's samples"
    )
    ap.add_argument("--out", type=Path, default=Path("reports/runs"))
    args = ap.parse_args(argv)
    if args.replot is not None:
        print(replot(args.replot))
        return 0
    settings = (
        SMOKE
        if args.smoke
        else SoakSettings(duration_s=args.duration_s, warmup_s=args.warmup_s, engine=args.engine)
    )
    record = soak(settings, args.out)
    print(json.dumps({k: v for k, v in record.items() if k != "growth"}, indent=2, default=str))
    for row in rows_of(record):
        print(f"{row.name}: {row.value} {row.unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
