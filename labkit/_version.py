"""labkit's version, in a leaf module: everything that records it (run.json, images) imports it from here."""

__version__ = "0.1.0"
