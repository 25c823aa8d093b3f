"""Which faults a lab can apply, given what runs its model service: the lab cannot kill, pause or restart a
service it does not run (an Ollama at --ollama-url, an OpenAI-compatible service at --openai-url), and
`unload` is Ollama's (a request with keep_alive 0), which an OpenAI-compatible server has no word for.

The wrapper's faults (latency, error, stream_cut) sit in front of any model service and always apply; so do
the faults on the wrapper, Prometheus and the machine. The injector refuses the rest before anything starts,
and random schedules never draw them. Remediation on an alert can only wait for an alert the lab's rules
define.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from labkit.config import LabConfig
from labkit.errors import ConfigError
from labkit.faults import FAULT_KINDS, FAULT_TARGETS, FaultKind
from labkit.measure.slo.rules import RULES_FILE_NAME

__all__ = ["alert_refusal", "applicable_faults", "fault_refusal", "lab_alert_names", "remediation_refusal"]

# The kinds the lab's manager applies to a service it runs.
_MANAGER_KINDS: frozenset[FaultKind] = frozenset({"kill", "restart", "pause"})


def _model_service(config: LabConfig) -> str:
    """The model service in words, for messages: `an Ollama at URL`."""
    if config.engine == "openai":
        return f"an OpenAI-compatible service at {config.model_url}"
    if config.engine == "ollama":
        return f"an Ollama at {config.model_url}"
    return f"engine {config.engine!r}'s model server at {config.model_url}"


def fault_refusal(config: LabConfig, kind: FaultKind, target: str) -> str | None:
    """Why a `kind` fault on `target` cannot apply to the lab of `config`, in one sentence that says what
    to do instead; None when it can."""
    if kind in _MANAGER_KINDS and target == "model" and not config.supervised_model:
        instead = "latency/error/stream_cut" + ("/unload" if config.model_api == "ollama" else "")
        return (
            f"the model service is {_model_service(config)}, which the lab does not run, so it cannot "
            f"{kind} it; target the wrapper, or use {instead} (the wrapper's faults)"
        )
    if kind == "unload" and config.model_api != "ollama":
        return (
            f"unload forces a cold load through Ollama's API (keep_alive 0), and the model service is "
            f"{_model_service(config)}, which speaks the OpenAI-compatible API (no unload); "
            "use kill or restart of the model (when the lab runs it) for a cold start"
        )
    return None


def applicable_faults(config: LabConfig) -> dict[FaultKind, tuple[str, ...]]:
    """Every fault kind the lab of `config` can apply, with the targets it can apply it to (kinds with
    none left out): what `random_schedule(applicable=...)` draws from."""
    found: dict[FaultKind, tuple[str, ...]] = {}
    for kind in FAULT_KINDS:
        targets = tuple(t for t in FAULT_TARGETS[kind] if fault_refusal(config, kind, t) is None)
        if targets:
            found[kind] = targets
    return found


def remediation_refusal(config: LabConfig, target: str) -> str | None:
    """Why remediation cannot restart `target` on the lab of `config` (a model service it does not run);
    None when it can."""
    if fault_refusal(config, "restart", target) is None:
        return None
    return (
        f"remediation cannot restart the {target}: it is {_model_service(config)}, which the lab does not "
        "run; remediate the wrapper instead (--remediate wrapper, or target: wrapper)"
    )


def lab_alert_names(rules_dir: Path) -> tuple[str, ...]:
    """The alert names the lab's Prometheus rules define (the rule file `labkit up` generated in
    `rules_dir` for the lab's alert profile), sorted; ConfigError when the lab has none."""
    path = rules_dir / RULES_FILE_NAME
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read the lab's alert rules {path} ({exc}); restart the lab (labkit down, labkit up)"
        ) from exc
    groups = document.get("groups") if isinstance(document, dict) else None
    rules = [rule for group in groups or () if isinstance(group, dict) for rule in group.get("rules") or ()]
    return tuple(sorted({str(rule["alert"]) for rule in rules if isinstance(rule, dict) and "alert" in rule}))


def alert_refusal(rules_dir: Path, alert: str) -> str | None:
    """Why remediation cannot wait for `alert` on the lab whose rules are in `rules_dir` (its rules define
    no such alert), listing the names they do define; None when they define it."""
    known = lab_alert_names(rules_dir)
    if alert in known:
        return None
    listed = ", ".join(known) if known else "none (the SLO spec has no Occurrences objective)"
    return f"remediation on alert {alert!r}: the lab's alert rules define no such alert (known: {listed})"
