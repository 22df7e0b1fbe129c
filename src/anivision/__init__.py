"""anivision: recognise what is in anime and manga character images."""

from anivision.version import __version__

__all__ = ["__version__"]
