"""Schemas tests build exports and splits with."""

from __future__ import annotations

from tfship.data.schema import Feature, Kind, Schema


def pixels_schema(shape: tuple[int, int, int] = (8, 8, 1), name: str = "pixels") -> Schema:
    """One raw image feature: the digits demo's schema."""
    return Schema((Feature(name, Kind.IMAGE, "float32", shape),), "label")
