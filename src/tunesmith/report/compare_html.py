"""compare.html: the comparison table (best in each column marked) and the trade-off plots, self-contained."""

from __future__ import annotations

from pathlib import Path

from tunesmith.eval.metrics import direction
from tunesmith.report import plots
from tunesmith.report.runlog import read_json, read_metrics
from tunesmith.report.style import embedded, write_page

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith comparison: {{ name }}</title>
<style>{{ css | safe }}</style></head><body>
<h1>{{ name }}</h1>
<p>Same data, seed and budget for every run; task metric <b>{{ metric }}</b> ({{ "higher" if higher else "lower" }} is better).
The best value in each column is marked.</p>
<table class="numbers"><tr>{% for c in columns %}<th>{{ c.title }}</th>{% endfor %}</tr>
{% for r in rows %}<tr>{% if r.status == "ok" %}{% for c in columns %}<td class="{{ 'best' if r.name in best.get(c.key, []) else '' }}">{{ r.cells[c.key] }}</td>{% endfor %}
{% else %}<td>{{ r.name }}</td><td class="failed" colspan="{{ columns|length - 1 }}">failed: {{ r.error }}</td>{% endif %}</tr>
{% endfor %}</table>
{% if images %}<div class="plots">
{% for title, data in images %}<figure><img alt="{{ title }}" src="data:image/png;base64,{{ data }}"><figcaption>{{ title }}</figcaption></figure>{% endfor %}
</div>{% endif %}
<p>Measured on: {% for m in machines %}<b>{{ m }}</b>{% if not loop.last %}; {% endif %}{% endfor %}
{% if machines|length > 1 %}<span class="worse">(several machines: times and memory are not comparable across them)</span>{% endif %}</p>
<p>Each run's own report: {% for r in rows if r.status == "ok" %}<code>{{ r.run_dir }}/report.html</code>{% if not loop.last %}, {% endif %}{% endfor %}</p>
</body></html>
"""


def _columns(metric: str, has_forgetting: bool) -> list[dict]:
    """key, title, which value is best (None: not ranked), format."""
    cols = [("name", "run", None, "{}"), ("metric", f"{metric} (tuned)", "metric", "{:.4f}"),
            ("base_metric", f"{metric} (base)", None, "{:.4f}"), ("trainable_params", "trainable params", "min", "{:,}"),
            ("trainable_percent", "% of total", None, "{:.3f}"), ("train_seconds", "train s", "min", "{:,.1f}"),
            ("tokens_per_second", "tokens/s", "max", "{:,.0f}"), ("peak_memory_mb", "peak memory MB", "min", "{:,.0f}")]
    if has_forgetting:
        cols.append(("forgetting_mean", "forgetting (mean change)", "max", "{:+.4f}"))
    return [{"key": k, "title": t, "best": b, "fmt": f} for k, t, b, f in cols]


def write_compare_report(out: Path) -> Path:
    out = Path(out)
    summary = read_json(out / "compare.json")
    metric, rows = summary["metric"], summary["rows"]
    higher = (summary.get("direction") or direction(metric or "")) == "max"
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        r["metric"], r["base_metric"] = r["tuned"].get(metric), r["base"].get(metric)
    columns = _columns(metric, any(r.get("forgetting") for r in ok))
    best = {}
    for c in columns:
        values = [(r[c["key"]], r["name"]) for r in ok if r.get(c["key"]) is not None]
        if c["best"] and values:
            pick = max if (c["best"] == "max" or (c["best"] == "metric" and higher)) else min
            top = pick(v for v, _ in values)
            best[c["key"]] = [n for v, n in values if v == top]
    for r in ok:
        r["cells"] = {c["key"]: "–" if r.get(c["key"]) is None else c["fmt"].format(r[c["key"]]) for c in columns}
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    made = [
        (f"{metric} vs trainable parameters", plots.tradeoff(ok, "trainable_params", "trainable parameters (log)", metric, higher, plot_dir / "vs_params.png", log_x=True)),
        (f"{metric} vs training time", plots.tradeoff(ok, "train_seconds", "training seconds", metric, higher, plot_dir / "vs_time.png")),
        (f"{metric} vs peak memory", plots.tradeoff(ok, "peak_memory_mb", "peak memory (MB)", metric, higher, plot_dir / "vs_memory.png")),
        ("training loss, overlaid", plots.overlaid_losses(
            {r["name"]: [(x["epoch"], x["loss"]) for x in read_metrics(Path(r["run_dir"])) if "loss" in x and "epoch" in x] for r in ok},
            plot_dir / "losses.png")),
        ("forgetting per run", plots.forgetting_bars(ok, plot_dir / "forgetting.png")),
    ]
    return write_page(
        out / "compare.html", TEMPLATE,
        name=out.name, metric=metric, higher=higher, rows=rows, columns=columns, best=best, images=embedded(made),
        machines=sorted({r.get("machine", "not recorded") for r in ok}))
