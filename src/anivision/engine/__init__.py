"""The one training loop, checkpoints and resume."""
