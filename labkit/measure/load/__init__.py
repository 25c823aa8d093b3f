"""The lab's load generator: open loop (seeded load shapes: constant, Poisson, a ramp, bursty gamma
arrivals, or a trace replayed) or closed loop, streaming-aware, every scheduled request one row in a DataFrame
and in the run directory's requests.jsonl; a monitor may
watch a run and stop it early (the capacity search stops an over-saturated point).

It speaks the wrapper's `POST /generate` or the OpenAI-compatible chat and text completions (`LoadSpec.api`),
with fixed prompts, synthetic prompts of a token length, or a prompts file, and seeded token-count
distributions. Latency is timed from each request's *intended* send time (no coordinated omission); the
client's own lag is the separate `queue_delay_s` column. See `REQUEST_COLUMNS` and `ERROR_KINDS` for what a
row holds.
"""

from __future__ import annotations

from labkit.measure.load._records import ERROR_KINDS, REQUEST_COLUMNS, load_requests_frame, requests_frame
from labkit.measure.load._result import LoadMonitor, LoadProgress, LoadResult, achieved_rate
from labkit.measure.load._runner import run_load, run_load_async
from labkit.measure.load._shapes import TraceLine, read_trace_file
from labkit.measure.load._spec import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_REQUESTS,
    DEFAULT_PROMPTS,
    LoadSpec,
    prompt_choices,
    schedule,
    workload,
)
from labkit.measure.load._workload import (
    MAX_WORK_TOKENS,
    PromptEntry,
    RequestOverride,
    TokenDistribution,
    Workload,
    read_prompts_file,
    synthetic_prompt,
)
from labkit.measure.load_apis import (
    API_ENDPOINTS,
    ARRIVALS,
    LOAD_APIS,
    RAMPS,
    STEADY_ARRIVALS,
    Arrival,
    LoadApi,
    Ramp,
    SteadyArrival,
    wrapper_api_url,
)

__all__ = [
    "API_ENDPOINTS",
    "ARRIVALS",
    "DEFAULT_MAX_DURATION_S",
    "DEFAULT_MAX_REQUESTS",
    "DEFAULT_PROMPTS",
    "ERROR_KINDS",
    "LOAD_APIS",
    "MAX_WORK_TOKENS",
    "RAMPS",
    "REQUEST_COLUMNS",
    "STEADY_ARRIVALS",
    "Arrival",
    "LoadApi",
    "LoadMonitor",
    "LoadProgress",
    "LoadResult",
    "LoadSpec",
    "PromptEntry",
    "Ramp",
    "RequestOverride",
    "SteadyArrival",
    "TokenDistribution",
    "TraceLine",
    "Workload",
    "achieved_rate",
    "load_requests_frame",
    "prompt_choices",
    "read_prompts_file",
    "read_trace_file",
    "requests_frame",
    "run_load",
    "run_load_async",
    "schedule",
    "synthetic_prompt",
    "workload",
    "wrapper_api_url",
]
