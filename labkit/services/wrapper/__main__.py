"""Entry point of `python -m labkit.services.wrapper`: serve the wrapper with flags from the command line.

See labkit.services.wrapper._cli for the flags.
"""

from __future__ import annotations

from labkit.services.wrapper._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
