"""JSON number types for the wrapper's strict request models.

JSON Schema counts 21.0 as an integer, and so do JSON clients that have only one number type; strict
pydantic would refuse it. `JsonInt` takes an integral float as its int, still refusing "21", true and 21.5.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["JsonInt", "json_integer"]


def json_integer(value: Any) -> Any:
    """`value` as an int when it is a float with an integral value; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]
