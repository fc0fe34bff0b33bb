"""LaTeX helpers shared by the notebook PDFs and the report: escaping, number format, date."""

from __future__ import annotations

import datetime
import math
import numbers


def escape_latex(text: str) -> str:
    """Escape the LaTeX special characters of a plain-text value."""
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
             "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
             "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}"}
    return "".join(table.get(char, char) for char in text)


MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
          "octobre", "novembre", "décembre")


def french_date(day: datetime.date | None = None) -> str:
    """'22 novembre 2025' (the report has no babel-french to translate \\today)."""
    day = day or datetime.date.today()
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"


def format_value(value: object) -> str:
    """A table cell: 3 decimals below 10 (rates), 1 above (ranks, seconds), scientific for tiny
    values, ints as they are."""
    if isinstance(value, bool):
        return "oui" if value else "non"
    if value is None:  # a missing value (save_json writes NaN as null)
        return "--"
    if isinstance(value, numbers.Integral):  # numbers.*: NumPy scalars (DataFrame cells) too
        return f"{int(value):,}".replace(",", r"\,")
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "--"
        if value == 0:
            return "0"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"  # rates vs ranks, seconds
    return escape_latex(str(value))
