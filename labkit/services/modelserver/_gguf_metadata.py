"""Reads the key/value metadata of a GGUF file (what `/api/show` reports as `model_info`).

Pure Python, no weights loaded; arrays (the tokenizer's vocabulary) are skipped and reported as None.
"""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Any, BinaryIO

from labkit.errors import ModelNotFoundError

__all__ = ["read_gguf_metadata"]

logger = logging.getLogger(__name__)

_MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}  # fmt: skip


def read_gguf_metadata(path: Path) -> dict[str, Any]:
    """Every metadata key of the GGUF file at `path`; array values are None (as in Ollama's show).

    Raises ModelNotFoundError when the file is missing or is not a GGUF file.
    """
    try:
        with path.open("rb") as stream:
            if stream.read(4) != _MAGIC:
                raise ModelNotFoundError(
                    f"{path} is not a GGUF model file; pass --model-path with a .gguf file"
                )
            version = _unpack(stream, "<I")
            if version < 2:
                raise ModelNotFoundError(
                    f"{path} is GGUF version {version}; only versions 2 and later are read"
                )
            _unpack(stream, "<Q")  # tensor count
            count = _unpack(stream, "<Q")
            metadata: dict[str, Any] = {}
            for _ in range(count):
                key = _read_string(stream)
                metadata[key] = _read_value(stream, _unpack(stream, "<I"))
            return metadata
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    except (struct.error, UnicodeDecodeError, KeyError) as exc:
        raise ModelNotFoundError(
            f"{path} is not a valid GGUF file ({exc}); pass --model-path with a .gguf file"
        ) from exc


def _unpack(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = stream.read(size)
    if len(data) != size:
        raise struct.error("file ends inside the metadata")
    return struct.unpack(fmt, data)[0]


def _read_string(stream: BinaryIO) -> str:
    length = _unpack(stream, "<Q")
    data = stream.read(length)
    if len(data) != length:
        raise struct.error("file ends inside a string")
    return data.decode("utf-8")


def _read_value(stream: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _read_string(stream)
    if kind == _ARRAY:
        item_kind = _unpack(stream, "<I")
        length = _unpack(stream, "<Q")
        _skip_array(stream, item_kind, length)
        return None
    value = _unpack(stream, _SCALARS[kind])
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def _skip_array(stream: BinaryIO, item_kind: int, length: int) -> None:
    if item_kind in _SCALARS:
        stream.seek(struct.calcsize(_SCALARS[item_kind]) * length, 1)
        return
    for _ in range(length):
        if item_kind == _STRING:
            stream.seek(_unpack(stream, "<Q"), 1)
        elif item_kind == _ARRAY:
            _skip_array(stream, _unpack(stream, "<I"), _unpack(stream, "<Q"))
        else:
            raise KeyError(item_kind)
