"""Line styles that stay distinct for any number of lines: ten colours (matplotlib's tab10), then
the same colours with another marker."""

from __future__ import annotations

from typing import Any

from matplotlib import colormaps

COLORS = colormaps["tab10"].colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def style(i: int) -> dict[str, Any]:
    """Colour and marker of line ``i``: distinct for i < 100."""
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[(i // len(COLORS)) % len(MARKERS)]}
