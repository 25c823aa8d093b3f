"""The readiness probe of a lab's services, and the readiness state machine the local supervisor's
processes and the Docker agent's containers share (starting -> ready <-> unready).

A model service is ready when its model list names the lab's model: Ollama's /api/tags, or /v1/models of an
OpenAI-compatible server (llama-cpp-python's).
"""

from __future__ import annotations

import httpx

from labkit.config import ModelApi
from labkit.lab.contract import ServiceState
from labkit.lab.specs import ServiceSpec

__all__ = ["PROBE_TIMEOUT_S", "ProbedState", "check_ready", "served_models"]

PROBE_TIMEOUT_S = 3.0


async def check_ready(client: httpx.AsyncClient, spec: ServiceSpec) -> tuple[bool, str]:
    """Whether `spec`'s service answers 200 at its ready path (and, with `spec.model_name`, lists that
    model); (False, why) when not."""
    try:
        response = await client.get(spec.url + spec.ready_path)
    except httpx.HTTPError as exc:
        return False, f"not answering yet ({type(exc).__name__})"
    if response.status_code != 200:
        try:
            reason = response.json().get("error")
        except (ValueError, AttributeError):
            reason = None
        if isinstance(reason, dict):  # OpenAI's shape: {"error": {"message": ...}}
            reason = reason.get("message")
        return False, f"{spec.ready_path} answered {response.status_code}" + (f": {reason}" if reason else "")
    if spec.model_name is not None:
        served = served_models(response)
        if served is None:
            return False, f"{spec.ready_path} did not return a model list"
        api, names = served
        wanted = spec.model_name
        if wanted not in names and f"{wanted}:latest" not in names:
            hint = "pass --model-name"
            if api == "ollama":
                hint = f"run `ollama pull {wanted}` or {hint}"
            listed = ", ".join(sorted(names)) or "none"
            return False, f"model {wanted!r} is not served there (it lists: {listed}); {hint}"
    return True, ""


def served_models(response: httpx.Response) -> tuple[ModelApi, set[str]] | None:
    """The models a model list names, and whose list it is: an OpenAI-compatible /v1/models (`data`, each
    with an `id`) or Ollama's /api/tags (`models`, each with a `name` and `model`); None for anything else."""
    try:
        body = response.json()
        if isinstance(body.get("data"), list):
            return "openai", {str(m["id"]) for m in body["data"]}
        if isinstance(body.get("models"), list):
            return "ollama", {str(m[key]) for m in body["models"] for key in ("name", "model") if key in m}
    except (ValueError, AttributeError, TypeError, KeyError):
        return None
    return None


class ProbedState:
    """The readiness state machine both kinds of service share: starting -> ready <-> unready."""

    spec: ServiceSpec
    state: ServiceState
    detail: str
    ever_ready: bool
    start_failures: int

    def _set_state(self, state: ServiceState, detail: str = "") -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        raise NotImplementedError

    async def probe(self, client: httpx.AsyncClient) -> None:
        """One readiness check; updates the state, unless the state changed while the check ran."""
        state, pid = self.state, self.pid
        if state not in ("starting", "ready", "unready") or pid is None:
            return
        ok, why = await check_ready(client, self.spec)
        if (self.state, self.pid) != (state, pid):
            # A pause, kill or restart was handled while the answer was on its way (the service may have
            # answered just before it was stopped): the answer is about a state that is gone, and must not
            # overwrite the new one ("ready" for a paused service, or for a successor not yet listening).
            return
        if ok:
            self.ever_ready = True
            self.start_failures = 0
            self._set_state("ready")
        elif self.state == "ready":
            self._set_state("unready", why)
        elif self.state == "starting" and why != self.detail:
            self._set_state("starting", why)
