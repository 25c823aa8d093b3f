"""Turning pydantic's validation errors into labkit's messages: one line per problem, `field.path: what is
wrong` (`faults[2].params.delay_s: Input should be greater than 0`), and models whose bad input is one
ConfigError saying all of them (`CheckedModel`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from labkit.errors import ConfigError, FieldError
from labkit.yaml_lines import format_loc

__all__ = ["CheckedModel", "describe_error", "describe_validation_error", "error_message", "format_problem"]


class CheckedModel(BaseModel):
    """A model validated at the edge: invalid input is one ConfigError, `invalid <what>: ` and every problem.
    (pydantic calls a nested model's own __init__ too: use it for what is made on its own, not inside
    another model's fields, or the outer model's message loses the nested location.)"""

    invalid_what: ClassVar[str] = "input"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(f"invalid {self.invalid_what}: " + describe_validation_error(exc)) from None


def error_message(err: Any) -> str:
    """A pydantic error's message in labkit's words, without its location."""
    if err["type"] == "extra_forbidden":
        return "unknown field; check its spelling"
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] in ("literal_error", "enum"):
        message += f", got {err['input']!r}"
    return message


def describe_error(err: Any) -> tuple[tuple[str | int, ...], str]:
    """One pydantic error as (its location, its message without the location)."""
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return loc + cause.loc, cause.message
    return loc, error_message(err)


def format_problem(loc: tuple[str | int, ...], message: str, prefix: str = "") -> str:
    """`faults[2].params.delay_s: message` from a location and an optional prefix (`faults[2]`)."""
    where = prefix + format_loc(loc, leading_dot=bool(prefix))
    return f"{where}: {message}" if where else message


def describe_validation_error(exc: ValidationError) -> str:
    """Every problem as `field.path: message`, joined by `; `."""
    return "; ".join(format_problem(*describe_error(err)) for err in exc.errors())
