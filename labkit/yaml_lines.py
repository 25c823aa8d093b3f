"""Line numbers in YAML (and JSON) documents, so that a file's errors read `FILE:LINE: field: problem`
with the line of the offending key, not the line where the document starts.

Shared by the SLO spec loader (labkit.measure.slo.spec) and the experiment files (labkit.chaos).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

__all__ = ["YamlLines", "format_loc", "load_documents"]


class YamlLines:
    """The line of each node of one composed YAML document, found by a path of keys and indices
    (a pydantic error's `loc`, e.g. `("faults", 2, "params", "delay_s")`)."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def of(self, loc: tuple[str | int, ...]) -> int:
        """The 1-based line of the key (or list item) `loc` names; where a part of `loc` is not in the
        document (a missing field), the line of the deepest part that is."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                match = next((kv for kv in node.value if kv[0].value == part), None)
                if match is None:
                    break
                line = match[0].start_mark.line + 1
                node = match[1]
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
            ):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def duplicate_key(self) -> tuple[tuple[str | int, ...], int] | None:
        """The first key that a mapping gives twice (YAML loaders silently keep the last value): its path
        and the line of its second occurrence; None when every key is unique."""
        return _first_duplicate(self.root, ())


def _first_duplicate(
    node: yaml.Node | None, path: tuple[str | int, ...]
) -> tuple[tuple[str | int, ...], int] | None:
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                return (*path, name), key.start_mark.line + 1
            seen.add(name)
            found = _first_duplicate(value, (*path, name if name is not None else "?"))
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found = _first_duplicate(item, (*path, index))
            if found is not None:
                return found
    return None


def load_documents(text: str) -> Iterator[tuple[Any, YamlLines]]:
    """Each document of a YAML stream: its data (as yaml.safe_load_all gives it) and its lines.
    Raises yaml.YAMLError for a malformed stream (its problem_mark has the line and column)."""
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield loader.construct_document(node), YamlLines(node)
    finally:
        loader.dispose()


def format_loc(loc: tuple[str | int, ...], *, leading_dot: bool = False) -> str:
    """`("spec", "objectives", 0, "target")` -> `spec.objectives[0].target` (`.spec...` with `leading_dot`,
    to follow a prefix such as `faults[2]`)."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text or leading_dot else str(part))
    return text
