"""sopline: narrated screen recordings in, Standard Operating Procedures out."""

__version__ = "0.1.0"
