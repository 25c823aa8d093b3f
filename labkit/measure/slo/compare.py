"""Client-side and server-side SLIs of the same run side by side, with every difference explained.

The client's SLIs are exact, from its samples (`labkit.measure.slo.client`); the server's are exact counts
from Prometheus (`labkit.measure.slo.server`). They differ for known reasons, each named in plain words in the
`explanation` column: requests that never reached the server, requests in flight at the window's edges,
time the client sees and the server does not (its send lag, the network), what each side counts, and
for quantiles the bucket Prometheus interpolates inside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from labkit.measure.histograms import BucketQuantile
from labkit.measure.prom import PrometheusClient, TimeLike, to_unix
from labkit.measure.slo.client import (
    completion_times,
    count_events,
    objective_events,
    samples_frame,
    valid_requests,
)
from labkit.measure.slo.server import server_quantile, server_slis
from labkit.measure.slo.spec import Objective, SloDefinition, load_slo_spec

__all__ = ["COMPARISON_COLUMNS", "compare_client_server", "exact_quantile", "explain_client_server"]

COMPARISON_COLUMNS = (
    "slo",
    "objective",
    "indicator",
    "target",
    "threshold_s",
    "client_good",
    "client_total",
    "client_sli",
    "server_good",
    "server_total",
    "server_sli",
    "difference",  # client_sli - server_sli
    "quantile",
    "client_quantile_s",
    "server_quantile_s",
    "server_bucket_lower_s",
    "server_bucket_upper_s",
    "client_quantile_in_server_bucket",
    "explanation",
)

# What one event of each histogram is, for sentences.
_EVENTS = {
    "llm_request_duration_seconds": "successful requests",
    "llm_time_to_first_token_seconds": "first tokens",
    "llm_inter_token_latency_seconds": "token gaps",
}


def exact_quantile(values: Sequence[float] | np.ndarray | pd.Series, quantile: float) -> float:
    """The smallest value with at least `quantile * n` of the values at or below it (NaN if none).

    Nearest rank (numpy's `inverted_cdf`), not pandas' default linear interpolation: Prometheus puts
    the quantile in the first bucket whose count reaches `quantile * n`, so under this definition the
    exact quantile of the same observations always lies in that bucket, whereas the interpolated one
    can cross the bucket's upper bound when the two observations it mixes straddle it.
    """
    if not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be within [0, 1], got {quantile}")
    ordered = np.sort(np.asarray(values, dtype=float)[~np.isnan(np.asarray(values, dtype=float))])
    if ordered.size == 0:
        return math.nan
    # The same float rank as Prometheus (q * n), so both sides pick the same observation.
    rank = max(1, math.ceil(quantile * ordered.size))
    return float(ordered[rank - 1])


def _client_values(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """The measurements behind a threshold SLO's client events (as `objective_events` selects them)."""
    ok = frame[frame["ok"] & valid_requests(frame)]
    if metric == "llm_inter_token_latency_seconds":
        gaps = [gap for request_gaps in ok["itl_s"] for gap in request_gaps] if "itl_s" in ok.columns else []
        return np.asarray(gaps, dtype=float)
    column = {"llm_request_duration_seconds": "e2e_s", "llm_time_to_first_token_seconds": "ttft_s"}[metric]
    return ok[column].dropna().to_numpy(float)


def _count(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


class _RunFacts:
    """What the samples say about the run's edges, for explanations."""

    def __init__(self, frame: pd.DataFrame, start: float, end: float) -> None:
        self.frame = frame
        no_response = frame["status"] == 0
        valid = valid_requests(frame)
        self.no_response = int((no_response & valid).sum())
        kinds = (
            frame.loc[no_response, "error_kind"]
            if "error_kind" in frame.columns
            else pd.Series([], dtype=object)
        )
        counts = kinds.fillna("unknown").value_counts()
        self.no_response_kinds = ", ".join(f"{count} {kind}" for kind, count in counts.items())
        finished = completion_times(frame)
        answered = ~no_response & valid
        self.ended_after = int((answered & (finished > end)).sum())
        self.ended_before = int((answered & (finished <= start)).sum())
        self.failed_after_first_token = (
            int((frame["ttft_s"].notna() & ~frame["ok"] & valid).sum()) if "ttft_s" in frame.columns else 0
        )
        delays = frame["queue_delay_s"].to_numpy(float) if "queue_delay_s" in frame.columns else np.array([])
        delays = delays[~np.isnan(delays)]
        self.queue_mean_s = float(delays.mean()) if delays.size else math.nan
        self.queue_max_s = float(delays.max()) if delays.size else math.nan

    def edges_sentence(self) -> str | None:
        outside = self.ended_after + self.ended_before
        if not outside:
            return None
        parts = []
        if self.ended_after:
            parts.append(f"{self.ended_after} finished after its end (in flight when it closed)")
        if self.ended_before:
            parts.append(f"{self.ended_before} finished before its start")
        return (
            f"{_plural(outside, 'request', 'requests')} of the client's fell outside the window: "
            f"{' and '.join(parts)}; the server counts a request when it finishes, so not in this window."
        )

    def send_lag_sentence(self) -> str:
        lag = (
            f" (queue_delay_s: mean {self.queue_mean_s * 1000:.1f} ms, max {self.queue_max_s * 1000:.1f} ms)"
            if not math.isnan(self.queue_mean_s)
            else ""
        )
        return (
            "Client times run from each request's intended send time and include the client's own send "
            f"lag{lag} and the network; the server times from the request's arrival, so client latencies "
            "are longer and a request near the threshold can meet it on the server and miss it on the client."
        )


def _ratio_explanation(
    facts: _RunFacts, client: tuple[int, int], server: tuple[float, float], resets: int
) -> str:
    (cg, ct), (sg, st) = client, server
    if cg == sg and ct == st:
        if ct == 0:
            return "Neither side saw a valid request in the window."
        return f"Client and server agree: {cg} of {ct} valid requests succeeded."
    sentences = [
        f"The client counted {cg} good of {ct} valid requests, the server {_count(sg)} of {_count(st)}."
    ]
    explained = 0
    if facts.no_response:
        kinds = f" ({facts.no_response_kinds})" if facts.no_response_kinds else ""
        sentences.append(
            f"{_plural(facts.no_response, 'request', 'requests')} got no HTTP response (status 0{kinds}): "
            "the server never counted them as valid — a refused connection never reached it, and a request "
            "the client gave up on is counted 499 (not valid) or not yet at all — so they lower only the "
            "client's SLI."
        )
        explained += facts.no_response
    edges = facts.edges_sentence()
    if edges:
        sentences.append(edges)
        explained += facts.ended_after + facts.ended_before
    if resets:
        sentences.append(
            f"A service restarted in the window ({_plural(resets, 'counter reset', 'counter resets')}): "
            "what it counted after its last scrape before the restart is lost to Prometheus."
        )
    residual = (ct - st) - explained
    if ct == st and cg != sg:
        sentences.append(
            f"Both sides saw {ct} requests but judged {abs(cg - sg):.0f} of them differently: the client's "
            "`ok` (a 200 and a complete answer) and the server's status code disagree, e.g. for a stream "
            "that failed after its 200 status line without the client reading the final error line."
        )
    elif residual and not resets:
        side = "client" if residual > 0 else "server"
        sentences.append(
            f"{_count(abs(residual))} more requests on the {side}'s side are not explained by the samples: "
            "another client may have used the wrapper in the window, or the window does not cover the whole "
            "run (end it at least one scrape interval after the last request)."
        )
    return " ".join(sentences)


def _quantile_sentence(quantile: float, client_q: float, server_q: BucketQuantile, facts: _RunFacts) -> str:
    name = f"p{quantile * 100:g}"
    if math.isnan(server_q.observations) or not server_q.observations > 0:
        return f"The server has no observations to interpolate a {name} from."
    client_text = "no client observations" if math.isnan(client_q) else f"{client_q:.4g} s"
    if server_q.in_inf_bucket:
        return (
            f"The server's {name} lies above its highest bucket bound ({server_q.lower:g} s): Prometheus "
            f"reports {server_q.lower:g} s there, which is only a lower bound; the client's exact {name} "
            f"is {client_text}."
        )
    text = (
        f"The server's {name} ≈ {server_q.value:.4g} s is interpolated inside the bucket "
        f"({server_q.lower:g}, {server_q.upper:g}] s, so it can be off by up to the bucket's width; "
        f"the client's exact {name} ({client_text})"
    )
    if math.isnan(client_q):
        return text.replace(f" ({client_text})", "") + " cannot be computed: the client has no observations."
    if server_q.lower < client_q <= server_q.upper:
        return text + " lies inside it."
    if client_q > server_q.upper:
        lag = (
            f" (send lag up to {facts.queue_max_s * 1000:.1f} ms here)"
            if not math.isnan(facts.queue_max_s)
            else ""
        )
        return (
            text + f" lies above it by {(client_q - server_q.upper) * 1000:.1f} ms: client times include the "
            f"send lag{lag} and the network, which the server does not see."
        )
    return (
        text
        + f" lies below it by {(server_q.lower - client_q) * 1000:.1f} ms: the two sides did not time the "
        "same events the same way (see above)."
    )


def _threshold_explanation(
    facts: _RunFacts,
    slo: SloDefinition,
    objective: Objective,
    client: tuple[int, int],
    server: tuple[float, float],
    quantile_sentence: str,
) -> str:
    (cg, ct), (sg, st) = client, server
    metric = slo.metric or ""
    events = _EVENTS.get(metric, "events")
    threshold = f"{objective.value:g} s"
    sentences: list[str] = []
    if cg == sg and ct == st:
        sentences.append(f"Client and server agree: {cg} of {ct} {events} within {threshold}.")
    else:
        sentences.append(
            f"The client counted {cg} of {ct} {events} within {threshold}, "
            f"the server {_count(sg)} of {_count(st)}."
        )
        if ct != st:
            if metric == "llm_time_to_first_token_seconds" and facts.failed_after_first_token:
                sentences.append(
                    f"The server times the first token of every request that got one, also the "
                    f"{_plural(facts.failed_after_first_token, 'request', 'requests')} that failed later; "
                    "the client counts successful requests only."
                )
            if metric == "llm_inter_token_latency_seconds":
                sentences.append(
                    "The server times gaps between the backend's chunks of every request, failed ones too; "
                    "the client times gaps between the lines it received, of successful requests only."
                )
            edges = facts.edges_sentence()
            if edges:
                sentences.append(edges)
        client_sli = cg / ct if ct else math.nan
        server_sli = sg / st if st else math.nan
        if metric == "llm_inter_token_latency_seconds":
            sentences.append(
                "Network buffering can merge lines (a gap near 0 ms after a long one) or delay them, so the "
                "client's gaps can be shorter or longer than the server's."
            )
        elif client_sli < server_sli:
            sentences.append(facts.send_lag_sentence())
        elif client_sli > server_sli:
            sentences.append(
                "The client saw more within the threshold than the server, although its times enclose the "
                "server's: the two sides did not count the same requests."
            )
    sentences.append(quantile_sentence)
    return " ".join(sentences)


def explain_client_server(
    samples: pd.DataFrame,
    server: pd.DataFrame,
    server_quantiles: Mapping[str, BucketQuantile],
    start: TimeLike,
    end: TimeLike,
    spec: Sequence[SloDefinition] | None = None,
    *,
    quantile: float = 0.95,
) -> pd.DataFrame:
    """The comparison of `compare_client_server` from server data already in hand (no Prometheus).

    `server` is a `server_slis` frame; `server_quantiles` maps each threshold SLO's metric to the
    server's `quantile` of it (`server_quantile`).
    """
    start_s, end_s = to_unix(start), to_unix(end)
    slos = list(spec) if spec is not None else load_slo_spec()
    frame = samples_frame(samples)
    facts = _RunFacts(frame, start_s, end_s)
    rows: list[dict[str, object]] = []
    for slo in slos:
        for objective in slo.objectives:
            match = server[(server["slo"] == slo.name) & (server["objective"] == objective.display_name)]
            if match.empty:
                raise ValueError(
                    f"the server SLIs have no row for SLO {slo.name!r}, {objective.display_name!r}"
                )
            srow = match.iloc[0]
            sg, st = float(srow["good"]), float(srow["total"])
            cg, ct = count_events(objective_events(frame, slo, objective))
            client_sli = cg / ct if ct else math.nan
            server_sli = sg / st if st else math.nan
            row: dict[str, object] = {
                "slo": slo.name,
                "objective": objective.display_name,
                "indicator": slo.indicator,
                "target": objective.target,
                "threshold_s": objective.value if slo.indicator == "threshold" else math.nan,
                "client_good": cg,
                "client_total": ct,
                "client_sli": client_sli,
                "server_good": sg,
                "server_total": st,
                "server_sli": server_sli,
                "difference": client_sli - server_sli,
                "quantile": math.nan,
                "client_quantile_s": math.nan,
                "server_quantile_s": math.nan,
                "server_bucket_lower_s": math.nan,
                "server_bucket_upper_s": math.nan,
                "client_quantile_in_server_bucket": pd.NA,
            }
            if slo.indicator == "ratio":
                row["explanation"] = _ratio_explanation(
                    facts, (cg, ct), (sg, st), int(srow["counter_resets"])
                )
            else:
                metric = slo.metric or ""
                server_q = server_quantiles.get(metric)
                if server_q is None:
                    raise ValueError(f"no server quantile given for {metric!r}")
                client_q = exact_quantile(_client_values(frame, metric), quantile)
                inside = (
                    pd.NA
                    if math.isnan(client_q) or math.isnan(server_q.lower)
                    else bool(server_q.lower < client_q <= server_q.upper)
                )
                row.update(
                    quantile=quantile,
                    client_quantile_s=client_q,
                    server_quantile_s=server_q.value,
                    server_bucket_lower_s=server_q.lower,
                    server_bucket_upper_s=server_q.upper,
                    client_quantile_in_server_bucket=inside,
                )
                row["explanation"] = _threshold_explanation(
                    facts,
                    slo,
                    objective,
                    (cg, ct),
                    (sg, st),
                    _quantile_sentence(quantile, client_q, server_q, facts),
                )
            rows.append(row)
    result = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    result["client_quantile_in_server_bucket"] = result["client_quantile_in_server_bucket"].astype("boolean")
    return result


def compare_client_server(
    samples: pd.DataFrame,
    prometheus: str | PrometheusClient,
    start: TimeLike,
    end: TimeLike,
    spec: Sequence[SloDefinition] | None = None,
    *,
    quantile: float = 0.95,
    lookback_s: float = 300.0,
    timeout_s: float = 10.0,
) -> pd.DataFrame:
    """One row per SLO objective: the client's exact SLI, the server's from Prometheus over the same window
    `[start, end]`, their difference (client - server), the `quantile` of each threshold SLO's metric on
    both sides with the server's bucket bounds, and a plain-language `explanation` (`COMPARISON_COLUMNS`).

    Choose the window as for `server_slis`: from before the first request to at least one scrape interval
    after the last one finished.
    """
    slos = list(spec) if spec is not None else load_slo_spec()
    client = (
        prometheus
        if isinstance(prometheus, PrometheusClient)
        else PrometheusClient(prometheus, timeout_s=timeout_s)
    )
    try:
        server = server_slis(client, start, end, slos, lookback_s=lookback_s)
        metrics = {slo.metric for slo in slos if slo.indicator == "threshold" and slo.metric}
        quantiles = {
            metric: server_quantile(
                client, start, end, metric=metric, quantile=quantile, lookback_s=lookback_s
            )
            for metric in sorted(metrics)
        }
    finally:
        if client is not prometheus:
            client.close()
    return explain_client_server(samples, server, quantiles, start, end, slos, quantile=quantile)
