"""Secrets kept in files (the lab's token, the wrapper's API key): read once, whitespace dropped, checked.

No web framework here: the load generator and the CLI read the API key without importing the wrapper.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from labkit.errors import ConfigError

__all__ = ["read_token_file"]

logger = logging.getLogger(__name__)


def read_token_file(path: Path, *, what: str, flag: str) -> str:
    """The secret in `path` (surrounding whitespace dropped); ConfigError when unreadable or empty.

    `what` names the secret in messages ("admin token"), `flag` the option that gave the file.
    """
    try:
        secret = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot read the {what} file {path}: {reason}; give a readable file or start without {flag}"
        ) from exc
    if not secret:
        raise ConfigError(f"the {what} file {path} is empty; write the {what} into it (mode 0600)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("the %s file %s is readable by others; make it 0600", what, path)
    return secret
