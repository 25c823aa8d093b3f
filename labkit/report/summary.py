"""The report's first screen: what ran (title, scenario, engine, model, host, versions), one sentence per
verdict saying what it judged and why, the SLOs violated with their burn rate and budget, per fault how fast
it was detected and recovered and how many requests it cost, what remediation did, and links to the run's
raw files. Also `report_figures`, every figure of the report in reading order.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pandas as pd

import labkit.report.figures as timelines
from labkit.report.alerts import alerts_figure
from labkit.report.data import RunData
from labkit.report.distribution import events_figure, latency_distribution_figure
from labkit.report.marks import ReportFigure
from labkit.report.tables import MISSING, TIMES, format_ms, headline, slo_report
from labkit.report.upstream import upstream_figure
from labkit.rundir import RunFile, RunFolder
from labkit.verdicts import MEANING, tone

__all__ = ["RAW_FILES", "ReportHTML", "raw_files", "report_figures", "summary", "verdict_sentences"]

# The run's files a reader may want one click away, with what each holds.
RAW_FILES: dict[str, str] = {
    RunFile.REQUESTS: "one line per request (client samples)",
    RunFile.EVENTS: "the journal",
    RunFile.SLO: "SLO results",
    RunFile.EXPERIMENT: "the experiment's result",
    RunFile.PARAMS: "parameters",
    RunFile.RUN: "status and headline",
    RunFile.LAB: "what it ran on",
    RunFile.ALERTS: "Alertmanager's notifications",
    RunFile.NOTEBOOK: "the executed scenario notebook",
    RunFolder.PROMETHEUS: "the Prometheus series (CSV)",
}
_TONE_COLOURS = {
    "good": ("#e6f4ea", "#137333"),
    "bad": ("#fce8e6", "#a50e0e"),
    "neutral": ("#f1f3f4", "#3c4043"),
}


@dataclass(frozen=True)
class ReportHTML:
    """A piece of HTML that a notebook displays as itself."""

    html: str

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


def _e(value: Any) -> str:
    return html.escape(str(value))


def raw_files(run: RunData) -> list[tuple[str, str]]:
    """(relative link, what it holds) of each raw file the run has."""
    return [(quote(str(name)), what) for name, what in RAW_FILES.items() if (run.path / name).exists()]


def verdict_sentences(run: RunData) -> list[tuple[str, str, str]]:
    """(question, word, sentence) for each verdict the run has: its status, the steady state, the SLOs."""
    rows: list[tuple[str, str, str]] = []
    if run.status:
        error = run.info.get("error")
        why = f": {error.get('ename')}: {error.get('evalue')}" if isinstance(error, dict) else ""
        rows.append(("Run", run.status, MEANING.get(run.status, run.status) + why))
    if run.experiment_verdict:
        checks = run.steady_state
        said = [
            f"{phase}: {check.get('verdict')} "
            f"({check.get('good_requests')} of {check.get('requests')} requests good)"
            for phase, check in checks.items()
        ]
        reason = _experiment_reason(run)
        detail = f" ({'; '.join(said)})" if said else ""
        rows.append(
            (
                "Steady state",
                run.experiment_verdict,
                f"{reason or MEANING.get(run.experiment_verdict, '')}{detail}.",
            )
        )
    report = slo_report(run)
    if report is not None:
        judged = "during the method" if run.has_method else "over the run"
        word = report.verdict
        objectives = len([r for r in report.results if r.met is not None])
        if word == "met":
            sentence = f"all {objectives} objectives met {judged}, on {report.requests} client requests."
        else:
            names = ", ".join(f"{r.slo_display_name} ({r.objective})" for r in report.violated)
            sentence = f"{len(report.violated)} of {objectives} objectives missed {judged}: {names}."
        rows.append(("SLOs", word, sentence))
    return rows


def _experiment_reason(run: RunData) -> str | None:
    reason = (run.experiment or {}).get("reason")
    return str(reason) if reason else None


def _card(question: str, word: str, sentence: str) -> str:
    background, colour = _TONE_COLOURS[tone(word)]
    return (
        f'<div class="verdict" style="flex:1 1 16em;background:{background};border-radius:6px;'
        'padding:0.5em 0.8em">'
        f'<div style="font-size:0.85em;color:#5f6368">{_e(question)}</div>'
        f'<div style="font-size:1.3em;font-weight:bold;color:{colour}">{_e(word)}</div>'
        f'<div style="font-size:0.85em">{_e(sentence)}</div></div>'
    )


def _facts(run: RunData) -> str:
    lab = run.lab
    parts = [
        ("scenario", run.scenario),
        ("engine", lab.get("engine")),
        ("model", lab.get("model")),
        ("upstream", lab.get("upstream_url") if lab.get("model_api") == "openai" else None),
        ("backend", lab.get("backend")),
        ("host", lab.get("host")),
        ("labkit", lab.get("labkit_version") or run.info.get("labkit_version")),
        ("Prometheus", lab.get("prometheus_version")),
        ("alert profile", _profile_text(lab.get("alert_profile"))),
        ("started (UTC)", run.info.get("started_at")),
        ("length", None if run.duration_s is None else f"{run.duration_s:.0f} s"),
    ]
    return " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in parts if v not in (None, ""))


def _profile_text(recorded: Any) -> str:
    """The alert profile in force as lab.json recorded it: `lab (windows / 30)`, or that it was not."""
    if not isinstance(recorded, dict) or not recorded.get("name"):
        return "not recorded"
    return f"{recorded['name']} (windows / {recorded.get('window_divisor', '?')})"


def _numbers(run: RunData) -> str:
    numbers = headline(run)
    availability = numbers.get("availability")
    cells = [
        ("requests", MISSING if numbers.get("requests") is None else str(numbers["requests"])),
        ("availability", MISSING if availability is None else f"{availability:.2%}"),
        ("p95 end-to-end", format_ms(numbers.get("e2e_p95_s"))),
        ("p95 time to first token", format_ms(numbers.get("ttft_p95_s"))),
    ]
    if numbers.get("max_rate_meeting_slos") is not None:
        low, high = numbers.get("max_rate_meeting_slos_low"), numbers.get("max_rate_meeting_slos_high")
        interval = " to ".join(MISSING if v is None else f"{v:.3g}" for v in (low, high))
        cells += [
            ("max rate meeting the SLOs", f"{numbers['max_rate_meeting_slos']:.3g}/s [{interval}]"),
            ("limiting", str(numbers.get("limiting_slo") or MISSING)),
        ]
    if numbers.get("false_pages") is not None:
        cells += [
            ("time to page", format_ms(numbers.get("time_to_page_s"))),
            ("pages without a fault", str(numbers["false_pages"])),
        ]
    return " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in cells)


def _slo_lines(run: RunData) -> list[str]:
    report = slo_report(run)
    if report is None:
        if run.experiment_verdict == "aborted" and run.samples.empty:
            return ["No SLO results for the method: it never ran (the experiment stopped before it)."]
        if run.path.joinpath(RunFile.CAPACITY).exists():
            return [
                "SLOs: judged per load point of the capacity search (its points/, in the Capacity section)."
            ]
        if run.path.joinpath(RunFile.REMEDIATION_AB).exists():
            return ["SLOs: judged per experiment of the A/B (its arms/, in the Remediation A/B section)."]
        return ["No SLO results: the run has no client samples to judge."]
    lines = []
    for r in report.violated:
        lines.append(
            f"<b>{_e(r.slo_display_name)}</b> violated: {r.sli * 100:.2f} % against {r.target * 100:g} % "
            f"({r.bad} bad of {r.valid}); burn rate {r.burn_rate:.2f}{TIMES} "
            f"(1{TIMES} spends the budget in 30 days), "
            f"{r.budget_consumed * 100:.2g} % of the 30-day error budget consumed."
            if r.sli is not None
            else f"<b>{_e(r.slo_display_name)}</b>: no data."
        )
    return lines or [
        f"Every objective met; the worst burn rate was {max(r.burn_rate for r in report.results):.2f}{TIMES}."
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fault_lines(run: RunData) -> list[str]:
    recovery = run.recovery
    lines = []
    for fault in run.faults.to_dict("records"):
        measures = (
            recovery[recovery["fault_id"] == fault["fault_id"]] if not recovery.empty else pd.DataFrame()
        )
        at = f"{fault['kind']} {fault['target']} at {fault['start_t_s']:.1f} s"
        if measures.empty:
            lines.append(f"<b>{_e(at)}</b>: no recovery measures (no client requests in its window).")
            continue
        m = measures.iloc[0]
        if pd.isna(m["time_to_detect_s"]):
            lines.append(
                f"<b>{_e(at)}</b>: not noticed by the client "
                f"({int(m['requests_in_window'])} requests in its window, none bad)."
            )
            continue
        recovered = (
            f"recovered in <b>{_e(format_ms(m['time_to_recover_s']))}</b>"
            if not pd.isna(m["time_to_recover_s"])
            else "<b>not recovered</b> by the end of the run"
        )
        lines.append(
            f"<b>{_e(at)}</b>: detected in <b>{_e(format_ms(m['time_to_detect_s']))}</b>, {recovered}; "
            f"{_count(int(m['requests_lost']), 'request')} lost, {int(m['requests_slow'])} slow "
            f"(of {int(m['requests_in_window'])} in its window)."
        )
    if not lines and not run.events:
        lines.append("Faults: unknown (the run has no journal, events.jsonl).")
    elif not lines and run.path.joinpath(RunFile.REMEDIATION_AB).exists():
        lines.append(
            "Faults: injected in the A/B's experiments (arms/), measured in the Remediation A/B section."
        )
    elif not lines:
        lines.append("No faults were injected in this run.")
    return lines


def _remediation_lines(run: RunData) -> list[str]:
    actions = run.remediation_actions
    policy = (run.params or {}).get("remediation")
    if actions.empty and run.path.joinpath(RunFile.REMEDIATION_AB).exists():
        return ["Remediation: off (a dry run) and on in alternate experiments of the A/B."]
    if actions.empty:
        return ["Remediation: none configured." if not policy else "Remediation: watched, never acted."]
    return [
        f"Remediation: {_e(('would ' + a['action']) if a['dry_run'] else (a['action'] + 'ed'))} "
        f"{_e(a['target'])} "
        f"at {a['t_s']:.1f} s" + (f" ({_e(a['detail'])})" if a.get("detail") else "") + "."
        for a in actions.to_dict("records")
    ]


def _clock(run: RunData) -> str:
    if run.has_method:
        return "Times are seconds on one clock: t = 0 at the method's start (where faults are scheduled)."
    return "Times are seconds since the run's start."


def summary(run: RunData) -> ReportHTML:
    """The report's first screen (see the module docstring), as HTML."""
    title = run.info.get("title") or (run.scenario or "run").replace("_", " ")
    cards = "".join(_card(*row) for row in verdict_sentences(run))
    items = "".join(
        f"<li>{line}</li>" for line in _slo_lines(run) + _fault_lines(run) + _remediation_lines(run)
    )
    links = " · ".join(f'<a href="{href}">{_e(href)}</a> ({_e(what)})' for href, what in raw_files(run))
    problems = "".join(f"<li>{_e(p)}</li>" for p in (*run.problems, *run.missing))
    body = (
        f'<div class="labkit-summary" style="max-width:1200px">'
        f'<h1 style="margin:0 0 0.1em 0;font-size:1.7em">{_e(title)}</h1>'
        f'<div style="color:#5f6368;font-size:0.9em">run {_e(run.run_id)} · {_facts(run)}</div>'
        f'<div style="display:flex;flex-wrap:wrap;gap:0.6em;margin:0.6em 0">{cards}</div>'
        f'<div style="font-size:0.95em">{_numbers(run)}</div>'
        f'<ul style="margin:0.4em 0;padding-left:1.2em">{items}</ul>'
        f'<div style="font-size:0.85em;color:#5f6368">Raw data: {links or "none"}. '
        f"{_clock(run)}</div>"
        + (
            f"<details><summary>What this run lacks</summary><ul>{problems}</ul></details>"
            if problems
            else ""
        )
        + "</div>"
    )
    return ReportHTML(body)


def report_figures(run: RunData) -> dict[str, ReportFigure]:
    """Every figure of the report in reading order, by name; the GPU one only where there was a GPU, the
    upstream's only where it exported metrics."""
    figures: dict[str, ReportFigure] = {
        "availability": timelines.availability_figure(run),
        "errors": timelines.error_rate_figure(run),
        "latency": timelines.latency_figure(run),
        "latency_distribution": latency_distribution_figure(run),
        "ttft": timelines.ttft_figure(run),
        "itl": timelines.itl_figure(run),
        "output_tokens": timelines.output_tokens_figure(run),
        "requests": timelines.request_rate_figure(run),
        "in_flight": timelines.in_flight_figure(run),
        "restarts": timelines.restarts_figure(run),
        "service_up": timelines.service_up_figure(run),
        "resources": timelines.resources_figure(run),
        "events": events_figure(run),
    }
    if (run.path / RunFile.ALERTS).exists() or "alerts" in run.series:
        figures["alerts"] = alerts_figure(run)
    gpu = timelines.gpu_figure(run)
    if gpu is not None:
        figures["gpu"] = gpu
    upstream = upstream_figure(run)
    if upstream is not None:
        figures["upstream"] = upstream
    return figures
