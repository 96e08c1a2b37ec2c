"""The one stylesheet of tunesmith's reports (report.html, compare.html, sweep.html, a pipeline's report.html),
inlined into each page, and how such a page is written: self-contained, its plots embedded."""

from __future__ import annotations

from pathlib import Path

CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
table.numbers td, table.numbers th { text-align: right; }
table.numbers td:first-child, table.numbers th:first-child { text-align: left; }
.better { color: #1a7f37; font-weight: 600; } .worse, .failed { color: #b42318; }
.best { background: #dcfce7; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; } pre { white-space: pre-wrap; margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
"""


def embedded(images: list[tuple[str, Path | None]]) -> list[tuple[str, str]]:
    """(title, PNG file) -> (title, base64 text) for an <img src="data:image/png;base64,...">; plots that were not
    made (None: no data for them) are left out."""
    import base64

    return [(title, base64.b64encode(Path(p).read_bytes()).decode()) for title, p in images if p]


def write_page(path: Path, template: str, **values) -> Path:
    """Render a report template (autoescaped, the stylesheet given as `css`) and write it to `path`."""
    from jinja2 import Environment

    html = Environment(autoescape=True).from_string(template).render(css=CSS, **values)
    Path(path).write_text(html, encoding="utf-8")
    return Path(path)
