"""Datasets, splits, transforms, samplers, face cropping, checks and synthetic data."""
