"""Line styles that stay distinct for any number of lines: ten colours (matplotlib's tab10), then
the same colours with another marker."""

from __future__ import annotations

import re
from typing import Any

from matplotlib import colormaps
from matplotlib.ticker import LogFormatterSciNotation

COLORS = colormaps["tab10"].colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def style(i: int) -> dict[str, Any]:
    """Colour and marker of line ``i``: distinct for i < 100."""
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[(i // len(COLORS)) % len(MARKERS)]}


def label_axes(ax: Any, title: str, xlabel: str, ylabel: str | None = None, *, title_size: float = 10,
               legend_size: float | None = 8) -> None:
    """The report's look of one panel: its title, axis labels (``ylabel`` None: left as it is), a
    light grid on major and minor ticks, and an 8 pt legend (``legend_size`` None: none)."""
    ax.set_title(title, fontsize=title_size)
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both", linewidth=0.5)
    if legend_size is not None:
        ax.legend(fontsize=legend_size)


def finish_figure(fig: Any, *, left: float = 0.9, right: float = 0.25, bottom: float = 0.6, top: float = 0.45,
                  wspace: float | None = None, hspace: float | None = None) -> None:
    """Make ``fig`` ready to save: plain-text labels on its log axes (:class:`PlainLogFormatter`)
    and margins set in inches (left for tick labels and the y label, bottom for the x label, top
    for a title), whatever the figure's size.

    Fixed margins stand in for ``tight_layout``, which measures every text by drawing the figure
    once more before it is saved: half the time of drawing a report's figure (a multi-panel
    loss-curve figure: 0.6 against 0.3 s here). Figures whose texts the suite does not control
    (Optuna's) keep ``tight_layout``."""
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                base, minor = axis.get_transform().base, axis.get_minor_formatter()
                axis.set_major_formatter(PlainLogFormatter(base))
                axis.set_minor_formatter(PlainLogFormatter(base, labelOnlyBase=minor.labelOnlyBase))
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=wspace, hspace=hspace)


_MATHTEXT_LABEL = re.compile(r"^\$\\mathdefault\{(-?)(?:([0-9.]+)\\times)?([0-9.]+)(?:\^\{(-?[0-9]+)\})?\}\$$")
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


class PlainLogFormatter(LogFormatterSciNotation):
    """matplotlib's log-axis tick labels (``10⁻²``, ``3×10⁻¹``, ``2⁵``), written with Unicode
    superscripts instead of mathtext: the same labels, without parsing each one through
    matplotlib's mathtext grammar (about 12 ms a label here, 0.3 s for a report's figures)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        text = super().__call__(x, pos)
        match = _MATHTEXT_LABEL.match(text)
        if match is None:
            return text
        sign, coeff, base, exponent = match.groups()
        power = base if exponent is None else base + exponent.translate(_SUPERSCRIPT)
        return f"{sign}{coeff}×{power}" if coeff else f"{sign}{power}"


LEGEND_CHAR_IN = 0.065  # the width of a character of an 8 pt legend label, in inches (DejaVu Sans, upper bound)
LEGEND_HANDLE_IN = 0.6  # a legend entry's line, marker and padding
LEGEND_ROW_IN = 0.19  # a row of an 8 pt legend


def legend_columns(labels: list[str], width: float, most: int = 4) -> int:
    """How many columns of ``labels`` (8 pt) fit side by side across ``width`` inches."""
    widest = max((len(s) for s in labels), default=1) * LEGEND_CHAR_IN + LEGEND_HANDLE_IN
    return max(1, min(most, len(labels), int((width - 0.2) // widest)))
