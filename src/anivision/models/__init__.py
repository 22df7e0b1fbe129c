"""Backbones (timm), heads and weight loading."""
