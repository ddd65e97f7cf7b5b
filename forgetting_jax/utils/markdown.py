"""Markdown pieces of the reports: tables and the numbers in them."""

import math
from typing import Any


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table: `header` and one line per row (cells as str)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def r2_text(value) -> str:
    """An R^2 for a table: n/a when undefined (a constant matrix, e.g. no answer lost at all)."""
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{float(value):.3f}"
