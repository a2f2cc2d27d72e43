"""Chapter 4: Gumbel-softmax samples."""

from __future__ import annotations

__all__: list[str] = []
