"""CLI sub-commands of the features; each module has ``register(subparsers)``."""
