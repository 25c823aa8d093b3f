"""Command line of the model server: `python -m labkit.services.modelserver --engine sim --port 11434`.

Bad flags and a missing model file end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from labkit.errors import ConfigError, LabkitError
from labkit.service_logs import configure_service_logging
from labkit.services.modelserver._server import serve
from labkit.services.modelserver._settings import ModelServerSettings

__all__ = ["build_parser", "main", "settings_from_args"]

logger = logging.getLogger(__name__)

PROG = "python -m labkit.services.modelserver"
EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage dump), status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG, description="An Ollama-API-compatible model server (llama.cpp or simulated)."
    )
    add = parser.add_argument
    add("--host", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, help="port to listen on (default 11434; 0 picks a free one)")
    add(
        "--engine",
        choices=["llama", "sim"],
        help="llama: llama.cpp and a GGUF file (default); sim: simulated tokens",
    )
    add("--model-name", help="the name clients ask for (default smollm2:135m)")
    add("--model-path", type=Path, help="GGUF file for the llama engine (default: the embedded SmolLM2)")
    add("--num-parallel", type=int, help="requests generating at once (default 1, like OLLAMA_NUM_PARALLEL)")
    add(
        "--max-queue",
        type=int,
        help="requests waiting for a slot before 503 (default 512, like OLLAMA_MAX_QUEUE)",
    )
    add("--keep-alive", help='how long the model stays loaded after use: "5m", "30s", "0", "-1" (default 5m)')
    add("--seed", type=int, help="default sampling seed (sim: text and delays; llama: llama.cpp) (default 0)")
    add("--sim-ttft-s", type=float, help="sim: mean time to first token in seconds (default 0.04)")
    add("--sim-itl-s", type=float, help="sim: mean inter-token latency in seconds (default 0.009)")
    add("--sim-jitter", type=float, help="sim: relative lognormal spread of delays, 0 = exact (default 0.1)")
    add("--n-threads", type=int, help="llama: CPU threads (default min(2, CPUs))")
    add("--n-ctx", type=int, help="llama: context length in tokens (default 2048)")
    return parser


def settings_from_args(args: argparse.Namespace) -> ModelServerSettings:
    """Settings from parsed flags (flags not given keep the settings' defaults); ConfigError if invalid."""
    given = {name: value for name, value in vars(args).items() if value is not None}
    try:
        return ModelServerSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(part) for part in err['loc']).replace('_', '-')}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid model server settings: {problems}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit status (0 after a clean shutdown)."""
    args = build_parser().parse_args(argv)
    # JSON lines on stderr (the lab's manager keeps them in a rotated file), with the wrapper's request ids.
    configure_service_logging("model")
    try:
        settings = settings_from_args(args)
        serve(settings)
    except ConfigError as exc:  # bad values, missing model file, port in use
        return _fail(str(exc), EXIT_USAGE)
    except LabkitError as exc:
        return _fail(str(exc), 1)
    return 0


def _fail(message: str, status: int) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return status
