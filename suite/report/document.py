"""The report as a document: blocks (headings, text, tables, figures) rendered twice, as a
self-contained HTML page (figures embedded as base64 PNG) and as Markdown (figures as PNG files
next to it)."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.specs.naming import file_name

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.5em} table{border-collapse:collapse;margin:1em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa} figure{margin:1em 0} img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555} .muted{color:#666;font-size:.9em}
.reproduced{color:#17692e;font-weight:600} .contradicted{color:#a31515;font-weight:600}
.inconclusive{color:#8a6100;font-weight:600}
"""


DPI = 100  # a figure's inches to CSS pixels
SHARP = 2  # its PNG at twice that resolution, shown at its size: crisp on high-density screens
MAX_OPEN = 16  # figures kept open to be drawn together (matplotlib warns past 20)


@dataclass(frozen=True)
class Link:
    """A table cell that links to a heading of the same document."""

    text: str
    heading: str


@dataclass
class Block:
    kind: str  # h1 h2 h3 p table figure list
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str | Link]] = field(default_factory=list)
    png: bytes = b""
    name: str = ""
    items: list[str] = field(default_factory=list)
    width: int = 0  # a figure's width on the page, in CSS pixels (its PNG has SHARP times as many)
    fig: Any = None  # a figure not drawn yet (Document.draw_figures)


class Document:
    """An ordered list of blocks with a title."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.blocks: list[Block] = [Block("h1", title)]
        self.summary = ""  # one line on the findings, for the command line (the claims' verdicts and power)
        self.tags: dict[str, str] = {}  # the findings as MLflow tags, for the run the report is logged on

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Block(f"h{level}", text))

    def para(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def bullets(self, items: list[str]) -> None:
        if items:
            self.blocks.append(Block("list", items=list(items)))

    def contents(self) -> None:
        """A table of contents here: a link to every second-level heading of the document."""
        self.blocks.append(Block("toc"))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(Block("table", header=header, rows=[[_cell(c) for c in r] for r in rows]))

    def figure(self, fig: Any, name: str, caption: str) -> None:
        """Add a matplotlib figure, drawn to PNG (and closed) by :meth:`draw_figures`."""
        self.blocks.append(Block("figure", text=caption, name=f"{file_name(name)}.png",
                                 width=round(fig.get_figwidth() * DPI), fig=fig))
        if sum(b.fig is not None for b in self.blocks) >= MAX_OPEN:
            self.draw_figures()

    def draw_figures(self) -> None:
        """Draw the figures added since the last call to PNG and close them: half of them in a
        forked process (:mod:`suite.report.split_draws`; a make bench report's 14 figures took
        43 s of its 237 s, profiled at load 12, one after another)."""
        import matplotlib.pyplot as plt

        from suite.report.split_draws import draw_results

        pending = [b for b in self.blocks if b.kind == "figure" and b.fig is not None]
        figures = iter(pending)
        pngs = draw_results(lambda: next(figures), lambda b: _png(b.fig), len(pending))
        for block, png in zip(pending, pngs, strict=True):
            plt.close(block.fig)
            block.png, block.fig = png, None

    # -- renderers ---------------------------------------------------------------------------------
    def markdown(self, figure_dir: str) -> str:
        out: list[str] = []
        for b in self.blocks:
            if b.kind.startswith("h"):
                out.append("#" * int(b.kind[1]) + " " + b.text)
            elif b.kind == "p":
                out.append(b.text)
            elif b.kind == "list":
                out.append("\n".join(f"- {i}" for i in b.items))
            elif b.kind == "toc":
                out.append("\n".join(f"- [{h}](#{_md_anchor(h)})" for h in self._sections()))
            elif b.kind == "table":
                lines = ["| " + " | ".join(_md(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
                lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in b.rows]
                out.append("\n".join(lines))
            elif b.kind == "figure":
                out.append(f"![{_md(b.text)}]({figure_dir}/{b.name})\n\n*{b.text}*")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        self.draw_figures()
        body: list[str] = []
        for b in self.blocks:
            if b.kind.startswith("h"):
                body.append(f"<{b.kind} id='{_anchor(b.text)}'>{html.escape(b.text)}</{b.kind}>")
            elif b.kind == "toc":
                body.append("<nav><ul>" + "".join(f"<li><a href='#{_anchor(h)}'>{html.escape(h)}</a></li>"
                                                   for h in self._sections()) + "</ul></nav>")
            elif b.kind == "p":
                body.append(f"<p>{html.escape(b.text)}</p>")
            elif b.kind == "list":
                body.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
            elif b.kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b.header)
                rows = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in b.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif b.kind == "figure":
                data = base64.b64encode(b.png).decode()
                size = f" width='{b.width}'" if b.width else ""
                body.append(f"<figure><img alt='{html.escape(b.text, quote=True)}'{size} "
                            f"src='data:image/png;base64,{data}'>"
                            f"<figcaption>{html.escape(b.text)}</figcaption></figure>")
        return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(self.title)}"
                f"</title><link rel='icon' href='data:,'><style>{CSS}</style></head><body>\n" + "\n".join(body)
                + "\n</body></html>\n")

    def _sections(self) -> list[str]:
        return [b.text for b in self.blocks if b.kind == "h2"]

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``report.html`` and ``report.md`` (+ ``report_files/*.png``) into ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        files = out_dir / "report_files"
        files.mkdir(exist_ok=True)
        self.draw_figures()
        for b in self.blocks:
            if b.kind == "figure":
                (files / b.name).write_bytes(b.png)
        md, page = out_dir / "report.md", out_dir / "report.html"
        md.write_text(self.markdown("report_files"))
        page.write_text(self.html())
        return page, md


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI * SHARP)
    return buf.getvalue()


def _cell(c: Any) -> str | Link:
    if isinstance(c, Link):
        return c
    if isinstance(c, float):
        return f"{c:.4g}"
    return "" if c is None else str(c)


def _anchor(text: str) -> str:
    """The id of a heading in the HTML page."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _md_anchor(text: str) -> str:
    """The anchor a Markdown renderer (GitHub's rule) gives a heading: lower case, punctuation
    dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _md(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


VERDICTS = ("reproduced", "contradicted", "inconclusive")


def _md_cell(c: str | Link) -> str:
    return f"[{_md(c.text)}](#{_md_anchor(c.heading)})" if isinstance(c, Link) else _md(c)


def _td(c: str | Link) -> str:
    if isinstance(c, Link):
        return f"<td><a href='#{_anchor(c.heading)}'>{html.escape(c.text)}</a></td>"
    cls = f" class='{c}'" if c in VERDICTS else ""
    return f"<td{cls}>{html.escape(c)}</td>"
