"""The pipeline's report.html: the chain of stages, what each bought (its metrics base -> tuned, where base is the
model the stage started from) and what it cost, and the samples of the last stage that generated text."""

from __future__ import annotations

from pathlib import Path

from tunesmith.report.html import MEMORY_NAMES, metric_rows
from tunesmith.report.runlog import read_json
from tunesmith.report.style import write_page

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith pipeline: {{ name }}</title>
<style>{{ css | safe }}</style></head><body>
<h1>{{ name }}</h1>
<p>{{ stages|length }} stages, each an ordinary run under <code>{{ name }}/&lt;stage&gt;/</code> with its own report.
In each stage, <i>base</i> is the model that stage started from (for a stage that starts from an earlier one, that
stage's tuned model).</p>
<table><tr><th>stage</th><th>objective</th><th>method</th><th>starts from</th><th>trainable params</th><th>train s</th><th>peak memory</th><th>status</th></tr>
{% for s in stages %}<tr><td><b>{{ s.stage }}</b></td><td>{{ s.objective or "" }}</td><td>{{ s.method or "" }}</td>
<td>{{ s.model or "" }}</td><td>{{ s.params }}</td><td>{{ s.seconds }}</td><td>{{ s.memory }}</td>
<td class="{{ 'failed' if s.error else '' }}">{{ "failed: " ~ s.error if s.error else ("skipped (finished before)" if s.skipped else "trained") }}</td></tr>
{% endfor %}</table>
{% for s in stages if s.rows %}<h2>{{ s.stage }}: what it bought</h2>
<table><tr><th>metric</th><th>base</th><th>tuned</th><th>change</th></tr>
{% for row in s.rows %}<tr><td>{{ row.name }}</td><td>{{ row.base }}</td><td>{{ row.tuned }}</td>
<td class="{{ row.cls }}">{{ row.delta }}</td></tr>{% endfor %}</table>
{% if s.samples %}<table><tr><th>prompt</th><th>base</th><th>tuned</th></tr>
{% for x in s.samples %}<tr><td><pre>{{ x.prompt }}</pre></td><td><pre>{{ x.base }}</pre></td><td><pre>{{ x.tuned }}</pre></td></tr>{% endfor %}
</table>{% endif %}
<p>Full report: <code>{{ s.run }}/report.html</code></p>
{% endfor %}
</body></html>
"""


def _samples(run_dir: Path, limit: int = 6) -> list[dict]:
    path = run_dir / "eval.json"
    if not path.exists():
        return []
    ev = read_json(path)
    pairs = zip(ev.get("base", {}).get("samples", []), ev.get("tuned", {}).get("samples", []))
    return [{"prompt": b.get("prompt", ""), "base": b.get("generation", ""), "tuned": t.get("generation", "")}
            for b, t in list(pairs)[:limit]]


def write_pipeline_report(out: Path) -> Path:
    out = Path(out)
    summary = read_json(out / "pipeline.json")
    stages = []
    for s in summary["stages"]:
        memory = s.get("peak_memory") or {}
        stages.append({
            **s,
            "params": f"{s['trainable_params']:,} of {s['total_params']:,}" if s.get("trainable_params") is not None else "",
            "seconds": f"{s['train_seconds']:,.1f}" if s.get("train_seconds") is not None else "",
            "memory": ", ".join(f"{v:,.0f} MB {MEMORY_NAMES.get(k, k)}" for k, v in memory.items()),
            "rows": metric_rows(s["base"], s["tuned"], s.get("directions")) if s.get("base") else [],
            "samples": _samples(Path(s["run"])) if not s.get("error") else [],
        })
    return write_page(out / "report.html", TEMPLATE, name=out.name, stages=stages)
