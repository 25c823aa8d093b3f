"""The APIs the load generator speaks, declared once: their names and paths, and the URL of each on the lab's
wrapper; and the names of its open loop's load shapes. Imports nothing heavy, so that the command line can
offer the names without loading the generator.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "API_ENDPOINTS",
    "ARRIVALS",
    "LOAD_APIS",
    "OPENAI_BASE_PATH",
    "RAMPS",
    "STEADY_ARRIVALS",
    "Arrival",
    "LoadApi",
    "Ramp",
    "SteadyArrival",
    "is_openai",
    "wrapper_api_url",
]

LoadApi = Literal["generate", "openai-chat", "openai-completions"]
LOAD_APIS: tuple[LoadApi, ...] = get_args(LoadApi)

# The open loop's load shapes (labkit.measure.load._shapes draws them), and the two ways a ramp climbs.
Arrival = Literal["constant", "poisson", "ramp", "gamma", "trace"]
ARRIVALS: tuple[Arrival, ...] = get_args(Arrival)
# The shapes whose mean rate holds for the whole run: what an experiment's and a notebook's load may take.
SteadyArrival = Literal["constant", "poisson", "gamma"]
STEADY_ARRIVALS: tuple[SteadyArrival, ...] = get_args(SteadyArrival)
Ramp = Literal["linear", "exponential"]
RAMPS: tuple[Ramp, ...] = get_args(Ramp)

# Where each API's requests go, under the spec's `url`: the wrapper's base URL for `generate`, the OpenAI
# base URL (what an OpenAI client takes as base_url, usually ending in /v1) for the others.
API_ENDPOINTS: dict[LoadApi, str] = {
    "generate": "/generate",
    "openai-chat": "/chat/completions",
    "openai-completions": "/completions",
}
# The lab's wrapper serves the OpenAI-compatible API under this prefix, as Ollama and vLLM do.
OPENAI_BASE_PATH = "/v1"


def is_openai(api: LoadApi) -> bool:
    """Whether `api` is one of the OpenAI-compatible APIs (streams are server-sent events)."""
    return api != "generate"


def wrapper_api_url(wrapper_url: str, api: LoadApi) -> str:
    """The `url` a LoadSpec for `api` takes to load the lab's wrapper at `wrapper_url`: the wrapper itself
    for `generate` (its requests go to {wrapper_url}/generate), its OpenAI base URL {wrapper_url}/v1 for the
    OpenAI-compatible APIs."""
    base = wrapper_url.rstrip("/")
    return base + OPENAI_BASE_PATH if is_openai(api) else base
