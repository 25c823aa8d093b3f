"""`python -m labkit.cli`, the same as the `labkit` command."""

from labkit.cli import main

main()
