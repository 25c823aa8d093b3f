"""The wrapper's command line: `python -m labkit.services.wrapper --port 8000 --backend-url URL ...`.

Flags map one to one onto WrapperSettings; a bad flag gives one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import ValidationError

from labkit.errors import LabkitError
from labkit.service_logs import configure_service_logging
from labkit.services.wrapper._server import serve
from labkit.services.wrapper._settings import WrapperSettings

__all__ = ["build_parser", "main"]

logger = logging.getLogger(__name__)

PROG = "python -m labkit.services.wrapper"


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """One flag per setting (`--backend-timeout-s` for backend_timeout_s) with its help and default."""
    parser = _OneLineParser(
        prog=PROG, description="The lab's LLM API in front of an Ollama or OpenAI-compatible model server."
    )
    for field, info in WrapperSettings.model_fields.items():
        kind: Any = Path if info.annotation == Path | None else info.annotation
        choices = None
        if get_origin(kind) is Literal:
            kind, choices = str, get_args(kind)
        parser.add_argument(
            _flag(field),
            dest=field,
            type=kind,
            choices=choices,
            default=None,
            help=f"{info.description} [default {info.default}]",
        )
    return parser


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until SIGTERM/SIGINT; 0 after a clean stop, 1 on a lab error, 2 on bad flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = WrapperSettings(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{_flag(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors())
        parser.error(problems)
    # JSON lines on stderr (the lab's manager keeps them in a rotated file): every request that is not a
    # probe, every admin action (fault injected, ended, refused), each with its request id.
    configure_service_logging("wrapper")
    try:
        serve(settings)
    except LabkitError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
