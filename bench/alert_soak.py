"""The no-page soak: a lab on the real embedded model (engine llama) under a light, fault-free load must page
nobody. Sends the lab's standard load (the chaos experiments' prompts, streamed, few tokens) at 1 req/s for
`--duration-s`, then reads the notifications the lab's Alertmanager sent (the run's alerts.jsonl) and the
alerts Prometheus itself fired (its ALERTS series), and reports requests, error ratio, pages and tickets with
their labels, and the alert profile in force. Writes alert_soak.json into the run directory.

Not a test (it takes ten minutes): run it by hand, on a machine with nothing else busy:

    .venv/bin/python -m bench.alert_soak                    # 600 s at 1 req/s, a fresh lab on free ports
    .venv/bin/python -m bench.alert_soak --duration-s 60    # a quick check that it works end to end

Exit status: 0 when nothing paged, 1 when something paged, 2 when the soak proves nothing (no request
succeeded, or the model did not keep up: its p95 answer took longer than the gap between two requests, so
requests queued and the load was not the light one the soak claims).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import free_ports
from labkit import LabConfig, RunDirectory, RunFile, open_lab, run_load
from labkit.chaos import ExperimentLoad
from labkit.lab.alert_feed import AlertFeed
from labkit.lab.alertmanager_config import ALERTMANAGER_GROUP_INTERVAL_S, ALERTMANAGER_GROUP_WAIT_S
from labkit.measure.load import achieved_rate
from labkit.measure.prom import PrometheusClient
from labkit.notifications import AlertNotification

DEFAULT_DURATION_S = 600.0
DEFAULT_RATE = 1.0
# SmolLM2-135M on 2 cores answers 64 tokens in ~1.1 s (SLO.md, "The standard workload"): 16 tokens take
# well under the 1 s between two requests, so the model keeps up (the result's p95 latency says so).
DEFAULT_MAX_TOKENS = 16
RESULT_FILE = "alert_soak.json"


def settle_s(scrape_interval_s: float) -> float:
    """How long to keep listening after the load: an alert that the last seconds of load raised fires at
    the next rule evaluation (one scrape interval), waits group_wait in Alertmanager and may wait a
    group_interval behind an earlier notification of its group."""
    return 2 * scrape_interval_s + ALERTMANAGER_GROUP_WAIT_S + ALERTMANAGER_GROUP_INTERVAL_S + 2.0


def _lab_settings(lab_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    """A fresh lab directory with every service on a free port (never a port someone else may hold), or
    the given one with its defaults (a lab already running there is used as it is)."""
    if lab_dir is not None:
        return lab_dir, {}
    ports = [name for name in LabConfig.model_fields if name.endswith("_port")]
    root = Path(tempfile.mkdtemp(prefix="labkit-alert-soak-"))
    return root, dict(zip(ports, free_ports(len(ports)), strict=True))


def fired_alerts(prometheus_url: str, start: float, end: float) -> list[dict[str, Any]]:
    """Every alert Prometheus fired between `start` and `end` (its ALERTS series, state firing): labels and
    the number of rule evaluations it was firing in."""
    window = max(1, math.ceil(end - start))
    query = f'count_over_time(ALERTS{{alertstate="firing"}}[{window}s])'
    with PrometheusClient(prometheus_url) as prometheus:
        result = prometheus.instant(query, at=end)
    return [
        {"labels": dict(series.get("metric", {})), "evaluations_firing": int(float(series["value"][1]))}
        for series in result
    ]


def read_notifications(run_dir: RunDirectory) -> list[AlertNotification]:
    path = run_dir.file(RunFile.ALERTS)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [AlertNotification.model_validate_json(line) for line in lines if line.strip()]


def _notification(note: AlertNotification) -> dict[str, Any]:
    return {
        "alertname": note.alertname,
        "status": note.status,
        "labels": note.labels,
        "startsAt": note.startsAt,
        "received_at": note.received_at,
    }


def soak(
    *,
    duration_s: float,
    rate: float,
    max_tokens: int,
    engine: str,
    lab_dir: Path | None,
    out: Path,
    say: Any = print,
) -> dict[str, Any]:
    """Run the soak; the result as written to alert_soak.json (see `main` for the exit status)."""
    root, settings = _lab_settings(lab_dir)
    try:
        return _soak_in(root, settings, duration_s, rate, max_tokens, engine, out, say)
    finally:
        if lab_dir is None:  # the fresh lab, down by now: its folder goes too (the record is in the run)
            shutil.rmtree(root, ignore_errors=True)


def _soak_in(
    root: Path,
    settings: dict[str, Any],
    duration_s: float,
    rate: float,
    max_tokens: int,
    engine: str,
    out: Path,
    say: Any,
) -> dict[str, Any]:
    with open_lab(root, engine=engine, say=say, **settings) as lab:
        lab_json = json.loads(lab.backend.lab.config_file.read_text(encoding="utf-8"))
        profile = lab_json.get("alert_profile")
        load = ExperimentLoad(rate=rate, max_tokens=max_tokens)
        spec = load.load_spec(lab.wrapper_url, duration_s=duration_s, api_key_file=lab.config.api_key_file)
        run_dir = RunDirectory.create(out, "alert_soak")
        say(f"soak: {duration_s:g} s at {rate:g} req/s, max_tokens {max_tokens}, into {run_dir.path}")
        listen_after = settle_s(lab.config.scrape_interval_s)
        started = time.time()
        with AlertFeed(lab.backend).follow_into(run_dir):
            result = run_load(spec, run_dir, progress=False)
            say(f"load done; listening {listen_after:g} s more for late alerts")
            time.sleep(listen_after)
        ended = time.time()
        fired = fired_alerts(lab.prometheus_url, started, ended)
        services = {s.name: {"state": s.state, "restarts": s.restarts} for s in lab.backend.status()}
    frame = result.frame
    ok = int(frame["ok"].sum())
    notes = read_notifications(run_dir)
    firing = [n for n in notes if n.status == "firing"]
    e2e = frame.loc[frame["ok"], "e2e_s"]
    record: dict[str, Any] = {
        "run_dir": str(run_dir.path),
        "engine": engine,
        "duration_s": duration_s,
        "rate_asked": rate,
        "rate_achieved": achieved_rate(frame),
        "max_tokens": max_tokens,
        "requests_sent": int(frame["actual_send"].notna().sum()),
        "requests_ok": ok,
        "error_ratio": None if frame.empty else round(1 - ok / len(frame), 6),
        "latency_mean_s": None if e2e.empty else round(float(e2e.mean()), 4),
        "latency_p95_s": None if e2e.empty else round(float(e2e.quantile(0.95)), 4),
        "alert_profile": profile,
        "listened_after_load_s": listen_after,
        "pages": [_notification(n) for n in firing if n.labels.get("severity") == "page"],
        "tickets": [_notification(n) for n in firing if n.labels.get("severity") == "ticket"],
        "notifications": len(notes),
        "prometheus_alerts_fired": fired,
        "services": services,
    }
    record["paged"] = bool(record["pages"]) or any(a["labels"].get("severity") == "page" for a in fired)
    # One model slot (NUM_PARALLEL 1): when an answer takes longer on average than the gap between two
    # requests, the queue grows without bound and the load is no longer the light one the soak claims.
    record["model_kept_up"] = record["latency_mean_s"] is not None and record["latency_mean_s"] < 1 / rate
    record["valid"] = ok > 0 and record["model_kept_up"]
    run_dir.write_json(RESULT_FILE, record)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.alert_soak", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("--duration-s", type=float, default=DEFAULT_DURATION_S, help="seconds of load [600]")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE, help="requests per second [1]")
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="tokens per answer [16]")
    ap.add_argument("--engine", default="llama", help="the model engine [llama: the real embedded model]")
    ap.add_argument(
        "--lab-dir", type=Path, default=None, help="use (or start) the lab here [a fresh one on free ports]"
    )
    ap.add_argument("--out", type=Path, default=Path("reports/runs"), help="where the run directory goes")
    args = ap.parse_args(argv)
    record = soak(
        duration_s=args.duration_s,
        rate=args.rate,
        max_tokens=args.max_tokens,
        engine=args.engine,
        lab_dir=args.lab_dir,
        out=args.out,
    )
    print(summary(record))
    print(f"result: {Path(record['run_dir']) / RESULT_FILE}")
    if not record["valid"]:
        print("the soak proves nothing: no request succeeded, or the model did not keep up", file=sys.stderr)
        return 2
    return 1 if record["paged"] else 0


def summary(record: dict[str, Any]) -> str:
    """What the soak found, in a few lines: the load, and each distinct alert that paged or ticketed."""
    lines = [
        f"{record['requests_sent']} requests at {record['rate_asked']:g} req/s "
        f"for {record['duration_s']:g} s "
        f"(engine {record['engine']}, max_tokens {record['max_tokens']}): {record['requests_ok']} ok, "
        f"error ratio {record['error_ratio']}, latency mean {record['latency_mean_s']} s, "
        f"p95 {record['latency_p95_s']} s (model kept up: {record['model_kept_up']})",
        f"alert profile: {(record['alert_profile'] or {}).get('name')}",
    ]
    for severity in ("page", "ticket"):
        fired = sorted(
            {
                f"{a['labels'].get('slo')} / {a['labels'].get('objective')} "
                f"({a['labels'].get('long_window')}/{a['labels'].get('short_window')} "
                f"at {a['labels'].get('burn_factor')}x)"
                for a in record["prometheus_alerts_fired"]
                if a["labels"].get("severity") == severity
            }
        )
        notified = sum(n["labels"].get("severity") == severity for n in record[f"{severity}s"])
        lines.append(f"{severity}s: {len(fired)} alert(s) fired, {notified} notification(s) received")
        lines.extend(f"  {line}" for line in fired)
    lines.append("PAGED without a fault" if record["paged"] else "no page")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
