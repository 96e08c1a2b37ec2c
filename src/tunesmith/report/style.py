"""The one stylesheet of tunesmith's reports (report.html and compare.html), inlined into each page."""

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
