"""report.html: one self-contained page (images embedded, no external scripts or fonts)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.report import plots
from tunesmith.report.runlog import read_json, read_metrics
from tunesmith.report.style import embedded, write_page

MEMORY_NAMES = {"peak_rss_mb": "process RSS", "peak_cuda_mb": "CUDA allocated"}

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith run: {{ name }}</title>
<style>{{ css | safe }}</style></head><body>
<h1>{{ name }}</h1>
<p>{{ manifest.model }} · method <b>{{ manifest.method }}</b> · objective <b>{{ manifest.objective }}</b> ·
{{ manifest.train_examples }} training / {{ manifest.eval_examples }} eval examples · seed {{ manifest.seed }}</p>

<h2>What it bought</h2>
<table><tr><th>metric</th><th>base</th><th>tuned</th><th>change</th></tr>
{% for row in metric_rows %}<tr><td>{{ row.name }}</td><td>{{ row.base }}</td><td>{{ row.tuned }}</td>
<td class="{{ row.cls }}">{{ row.delta }}</td></tr>{% endfor %}</table>

<h2>What it cost</h2>
<table>
<tr><td>trainable parameters</td><td>{{ "{:,}".format(manifest.trainable_params) }} of {{ "{:,}".format(manifest.total_params) }} ({{ manifest.trainable_percent }}%)</td></tr>
<tr><td>training time</td><td>{{ "%.1f"|format(manifest.train_seconds) }} s</td></tr>
<tr><td>tokens seen</td><td>{{ "{:,}".format(manifest.tokens_seen) }} ({{ "%.0f"|format(manifest.tokens_per_second) }} tokens/s)</td></tr>
<tr><td>peak memory</td><td>{{ manifest.peak_memory }}</td></tr>
<tr><td>machine</td><td>{{ manifest.machine.summary if manifest.machine else "not recorded" }}</td></tr>
</table>

{% if forgetting %}<h2>What it cost: forgetting</h2>
<p>Multiple-choice benchmarks scored by log-likelihood before and after tuning: normalized accuracy (acc_norm)
on the same seeded questions.</p>
<table><tr><th>task</th><th>questions</th><th>base</th><th>tuned</th><th>change</th></tr>
{% for row in forgetting %}<tr><td>{{ row.task }}</td><td>{{ row.n }}</td><td>{{ row.base }}</td><td>{{ row.tuned }}</td>
<td class="{{ row.cls }}">{{ row.change }}</td></tr>{% endfor %}</table>{% endif %}

{% if images %}<h2>Training</h2><div class="plots">
{% for title, data in images %}<figure><img alt="{{ title }}" src="data:image/png;base64,{{ data }}"><figcaption>{{ title }}</figcaption></figure>{% endfor %}
</div>{% endif %}

{% if probes %}<h2>Probes before and after</h2>
<table><tr><th>input</th><th>base</th><th>tuned</th></tr>
{% for p in probes %}<tr><td><pre>{{ p.input }}</pre></td><td><pre>{{ p.base }}</pre></td><td><pre>{{ p.tuned }}</pre></td></tr>{% endfor %}
</table>{% endif %}

{% if samples %}<h2>Held-out samples</h2>
<table><tr><th>prompt</th><th>reference</th><th>base</th><th>tuned</th></tr>
{% for s in samples %}<tr><td><pre>{{ s.prompt }}</pre></td><td><pre>{{ s.reference }}</pre></td><td><pre>{{ s.base }}</pre></td><td><pre>{{ s.tuned }}</pre></td></tr>{% endfor %}
</table>{% endif %}

<h2>Reproduce</h2>
<pre>{{ config }}</pre>
<p>versions: {% for k, v in manifest.versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</p>
</body></html>
"""

COUNTS = {"eval_tokens", "generated_examples"}  # sizes of what was measured, not metrics: no row


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def metric_rows(base: dict, tuned: dict, directions: dict | None = None) -> list[dict]:
    """Base vs tuned per metric; better/worse by the directions the run recorded (eval.json), else the defaults."""
    from tunesmith.eval.metrics import direction

    rows = []
    for name, b in base.items():
        t = tuned.get(name)
        if not isinstance(b, (int, float)) or not isinstance(t, (int, float)) or name in COUNTS:
            continue
        delta = t - b
        way = direction(name, directions)  # "neither": a description (a length), not a score
        good = (delta < 0) if way == "min" else (delta > 0)
        rows.append({"name": name, "base": _fmt(b), "tuned": _fmt(t), "delta": f"{delta:+.4f}",
                     "cls": "" if way == "neither" else "better" if good else ("worse" if delta else "")})
    return rows


def forgetting_rows(forgetting: dict) -> list[dict]:
    return [{"task": task, "n": f["n"], "base": _fmt(f["base"]), "tuned": _fmt(f["tuned"]), "change": f"{f['change']:+.4f}",
             "cls": "better" if f["change"] > 0 else ("worse" if f["change"] < 0 else "")} for task, f in forgetting.items()]


def write_report(run_dir: Path) -> Path:
    """Draw plots into plots/ and write report.html, from the files in run_dir."""
    run_dir = Path(run_dir)
    manifest = read_json(run_dir / "manifest.json")
    ev = read_json(run_dir / "eval.json")
    records = read_metrics(run_dir)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    made = [("loss curves", plots.loss_curves(records, plot_dir / "loss.png"))]
    for metric in ("accuracy", "f1"):
        made.append((f"eval {metric} per epoch", plots.eval_metric_curve(records, metric, plot_dir / f"eval_{metric}.png")))
    for side in ("base", "tuned"):
        if "confusion_matrix" in ev[side]:
            made.append((f"confusion matrix, {side}", plots.confusion(ev[side]["confusion_matrix"], ev[side]["labels"], side, plot_dir / f"confusion_{side}.png")))
    images = embedded(made)
    probes = [{"input": i, "base": b, "tuned": t} for i, b, t in zip(ev.get("probes", {}).get("inputs", []),
              ev.get("probes", {}).get("base", []), ev.get("probes", {}).get("tuned", []))]
    samples = [{**s, "base": s["generation"], "tuned": t["generation"]}
               for s, t in zip(ev["base"].get("samples", []), ev["tuned"].get("samples", []))]
    mem = manifest.get("peak_memory", {})
    return write_page(
        run_dir / "report.html", TEMPLATE,
        name=run_dir.name, manifest={**manifest, "peak_memory": ", ".join(f"{v:,.0f} MB {MEMORY_NAMES.get(k, k)}" for k, v in mem.items())},
        metric_rows=metric_rows(ev["base"], ev["tuned"], ev.get("directions")), images=images, probes=probes, samples=samples,
        forgetting=forgetting_rows(ev.get("forgetting") or {}),
        config=(run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else "",
    )
