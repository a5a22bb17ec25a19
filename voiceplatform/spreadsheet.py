"""CSV meant for a spreadsheet: rows handed back as text as they are written (for
streamed downloads), and cells a spreadsheet would run as formulas defused."""

from __future__ import annotations

import csv
from typing import Any

# A cell starting with one of these is a formula to a spreadsheet, and the files carry
# what strangers typed (a username at a failed login) or said (a transcript).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Line:
    """What csv.writer writes to: it hands each line back instead of storing it."""

    def write(self, line: str) -> str:
        return line


def row_writer() -> Any:
    """A csv.writer whose writerow(row) returns the row as one line of text."""
    return csv.writer(_Line())


def cell(text: str) -> str:
    """text as a spreadsheet shows it, never as a formula it would evaluate."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
