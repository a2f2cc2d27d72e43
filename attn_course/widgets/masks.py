"""Chapter 3: the mask editor."""

from __future__ import annotations

__all__: list[str] = []
