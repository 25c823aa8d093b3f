"""Entry point of `python -m labkit.services.modelserver` (see labkit.services.modelserver._cli).

Exits with the status `main()` returns.
"""

from __future__ import annotations

import logging
import sys

from labkit.services.modelserver._cli import main

logger = logging.getLogger(__name__)

if __name__ == "__main__":
    # The entry point, not the library, configures logging.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
