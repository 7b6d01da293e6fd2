"""tickline: an exchange server you can trade on over raw TCP."""

__version__ = "0.1.0"
