"""The package version (one place; ``anivision.__version__`` and ``anivision --version`` read it)."""

__version__ = "0.1.0"
