"""Chapter 5: global and local attention."""

from __future__ import annotations

__all__: list[str] = []
