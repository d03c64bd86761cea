"""Data sources, scanning, splits, decoding and transforms."""
