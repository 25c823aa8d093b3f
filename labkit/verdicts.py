"""The words labkit judges a run with, and what each means: one vocabulary for the report, the index,
run.json, `labkit chaos run` and `labkit slo check` (SLO.md, "Verdicts", says the same in prose).

Three questions, three words, never the same word for two of them:
- did the run run? `status`: running, completed, failed;
- did the steady-state hypothesis hold before and after the faults? the experiment's `verdict`: held,
  deviated, aborted, not checked;
- were the SLOs met during the method (or the whole run, without faults)? the SLOs' `verdict`: met,
  violated, no data;
- does remediation shorten the recovery from a fault kind (the remediation A/B)? `helps`, `hurts`,
  `no difference` (shown as "no difference at this N": more runs may find one).
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "AB_VERDICT_TEXT",
    "BAD_WORDS",
    "GOOD_WORDS",
    "MEANING",
    "AbVerdict",
    "ExperimentVerdict",
    "RunStatus",
    "SloVerdict",
    "experiment_verdict",
    "tone",
]

RunStatus = Literal["running", "completed", "failed"]
ExperimentVerdict = Literal["held", "deviated", "aborted", "not checked"]
SloVerdict = Literal["met", "violated", "no data"]
AbVerdict = Literal["helps", "hurts", "no difference"]

MEANING: dict[str, str] = {
    "running": "the run has not finished (or its process died without saying so)",
    "completed": "the run's notebook ran to its end",
    "failed": "the run stopped on an error (run.json says which cell)",
    "held": "the steady-state hypothesis (the SLOs over a short check) held before and after the faults",
    "deviated": "the steady-state hypothesis held before the faults but not after them",
    "aborted": "the experiment stopped early: the steady state did not hold before the faults, or it was "
    "interrupted",
    "not checked": "the method ran to its end with no steady-state check",
    "met": "every SLO objective reached its target",
    "violated": "at least one SLO objective missed its target",
    "no data": "no objective had events to judge",
    "helps": "with remediation the fault kind's time to recover was shorter, by more than the A/B's minimum "
    "effect over the whole of its interval",
    "hurts": "with remediation the fault kind's time to recover was longer, by more than the A/B's minimum "
    "effect over the whole of its interval",
    "no difference": "the A/B's interval does not clear its minimum effect on either side, or an arm had too "
    "few runs: more runs may still find a difference",
}
# How the A/B's words are shown: "no difference" says it holds at the number of runs made.
AB_VERDICT_TEXT: dict[str, str] = {
    "helps": "helps",
    "hurts": "hurts",
    "no difference": "no difference at this N",
}
GOOD_WORDS = frozenset({"completed", "held", "met", "helps"})
BAD_WORDS = frozenset({"failed", "deviated", "aborted", "violated", "hurts"})

# Runs written before 0.2 called a held hypothesis "completed", the same word as the run's status.
_LEGACY = {"completed": "held"}


def experiment_verdict(word: str) -> str:
    """An experiment's verdict in today's words (a run written by an older labkit may say "completed")."""
    return _LEGACY.get(word, word)


def tone(word: str | None) -> Literal["good", "bad", "neutral"]:
    """How a word reads at a glance: good (green), bad (red) or neutral."""
    return "good" if word in GOOD_WORDS else "bad" if word in BAD_WORDS else "neutral"
