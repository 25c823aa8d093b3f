"""The results table of docs/benchmarks.md, written between two markers so that the method and the
profiling notes around it stay hand-written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

START = "<!-- bench:results:start (written by python -m bench; do not edit by hand) -->"
END = "<!-- bench:results:end -->"


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    text = f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return f"{text} {unit}".strip()


def _spread(row: dict[str, Any]) -> str:
    s = row.get("spread")
    if not s:
        return "-"
    of = f" ({s['of']})" if s.get("of") else ""
    return f"{_num(s['low'])} - {_num(s['high'])}{of}, {s['rounds']} round{'s' if s['rounds'] != 1 else ''}"


def table(result: dict[str, Any]) -> str:
    about = result["machine"]
    smoke = " (SMOKE: tiny parameters, not measurements)" if result["smoke"] else ""
    cpu = about["cpu_model"] or "unknown CPU"
    times = sorted({str(s.get("measured_at", result["measured_at"])) for s in result["suites"].values()})
    if len(times) > 1:
        when = f"between {times[0]} and {times[-1]} (`--only` reruns)"
    else:
        when = times[0] if times else result["measured_at"]
    lines = [
        f"Measured {when}{smoke} in {result['seconds']:.0f} s "
        f"on {about['cpus_allowed']} CPUs ({cpu}), "
        f"{about['memory_gib']} GiB, Python {about['python']}, {about['prometheus'] or 'Prometheus ?'}; "
        f"load average at the start {about['load_average_at_start']}.",
        "",
        "| what | value | reference (same run) | ratio | spread | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        met = {True: "yes", False: "**no**", None: "-"}[row["target_met"]]
        reference = _num(row["reference"], row["unit"])
        if row["reference_what"]:
            reference += f" ({row['reference_what']})"
        what = row["what"] + (f" — {row['notes']}" if row["notes"] else "")
        target = row["target"]["text"] if row["target"] else "-"
        lines.append(
            f"| {what} | {_num(row['value'], row['unit'])} | {reference} | {_num(row['ratio'])} | "
            f"{_spread(row)} | {target} | {met} |"
        )
    failed = {n: s["error"] for n, s in result["suites"].items() if s["error"]}
    for name, error in failed.items():
        lines.append(f"\nSuite `{name}` FAILED: {error}")
    for name, info in result["suites"].items():
        if info.get("rerun_error"):
            lines.append(
                f"\nSuite `{name}`: its rerun at {info['rerun_at']} FAILED ({info['rerun_error']}); "
                f"its rows are those measured at {info.get('measured_at')}."
            )
    return "\n".join(lines)


def write_markdown(path: Path, result: dict[str, Any]) -> None:
    """Replace the table between the markers of `path`, or write a file holding only the table."""
    block = f"{START}\n{table(result)}\n{END}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if START in text and END in text:
            head, rest = text.split(START, 1)
            tail = rest.split(END, 1)[1]
            path.write_text(head + block + tail, encoding="utf-8")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Benchmarks\n\n{block}\n", encoding="utf-8")
