"""anivision: recognise what is in anime and manga character images."""

__version__ = "0.1.0"
