"""Chapter 2: scoring functions side by side."""

from __future__ import annotations

__all__: list[str] = []
