"""Rendering helpers shared by the dataset report and the project report.

The page is a Jinja2 template (``templates/report.html.j2``) with autoescaping on; Python
builds plain data (tables as ``{"headers", "rows"}``, plots as base64 PNG strings) and the
template lays it out. Tables and images are inlined, so the HTML is one self-contained file.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

#: Qualitative palette with 20 distinct colours (matplotlib ``tab20``, dark shades first):
#: plots with up to 20 series never repeat a colour.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")


def colors(n: int) -> list[str]:
    """``n`` distinct colours from :data:`PALETTE` (cycled only beyond 20 series)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def table(headers, rows) -> dict:
    """A table for the template; a cell is a value or ``{"text", "cls"}`` (cls: pass / fail)."""
    return {"headers": [str(h) for h in headers],
            "rows": [[c if isinstance(c, dict) else str(c) for c in r] for r in rows]}


def verdict_cell(passed: bool, yes: str = "pass", no: str = "FAIL") -> dict:
    return {"text": yes if passed else no, "cls": "pass" if passed else "fail"}


def fig_png(fig) -> str:
    """A matplotlib figure as base64 PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def file_png(path) -> str | None:
    """A PNG file as base64, or None when it does not exist or is not a PNG."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError:
        return None
    return base64.b64encode(data).decode("ascii") if data[:8] == b"\x89PNG\r\n\x1a\n" else None


#: A section: heading ``title`` at ``level`` (2 or 3) with anchor ``id``, an optional badge
#: ``{"text", "cls"}``, a one-line ``note`` (e.g. why it is empty), paragraphs, figures
#: ``{"id", "caption", "png"}`` and tables ``{"caption", "collapsed", "table"}``, in that order.
SECTION_DEFAULTS = {"level": 2, "badge": None, "note": None, "paragraphs": [], "figures": [], "tables": []}


def render(**context) -> str:
    """The report page for ``context`` (keys: title, intro, project, dataset; see the template)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("mlff_distiller.quality", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    sections = [{**SECTION_DEFAULTS, **sec} for sec in context.pop("sections", [])]
    return env.get_template("report.html.j2").render(sections=sections, **context)
