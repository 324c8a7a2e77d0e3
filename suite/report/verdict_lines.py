"""The claims table of a written report as lines for the command line: one per claim, its
verdict first (``suite run FILE`` ends with them)."""

from __future__ import annotations

from pathlib import Path

WIDTH = 150  # a line's most characters: the claim and as much of what was measured as fits


def claim_lines(report_md: Path) -> list[str]:
    """``verdict  claim: measured`` for each row of the report's claims table (the first
    Markdown table whose header has the columns ``claim``, ``measured`` and ``verdict``), each
    cut at :data:`WIDTH` characters; none if the report has no such table."""
    lines = report_md.read_text().splitlines() if report_md.is_file() else []
    for i, line in enumerate(lines):
        header = _cells(line)
        if not {"claim", "measured", "verdict"} <= set(header):
            continue
        claim, measured, verdict = (header.index(k) for k in ("claim", "measured", "verdict"))
        out = []
        for row in lines[i + 2:]:
            cells = _cells(row)
            if len(cells) != len(header):
                break
            text = f"{cells[verdict]:<12} {cells[claim]}: {cells[measured]}"
            out.append(text if len(text) <= WIDTH else text[:WIDTH - 1] + "…")
        return out
    return []


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return []
    return [c.strip() for c in line[1:-1].split(" | ")]
