"""sweep.html: the best trial, the parameter importances, the metric against each parameter and every trial;
self-contained (images embedded, one stylesheet), made from sweep.json."""

from __future__ import annotations

from pathlib import Path

from tunesmith.report import plots
from tunesmith.report.style import embedded, write_page
from tunesmith.runs.folder import read_json_file

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tunesmith sweep: {{ name }}</title>
<style>{{ css | safe }}</style></head><body>
<h1>{{ name }}</h1>
<p>{{ counts }} · metric <b>{{ s.metric }}</b> ({{ "higher" if higher else "lower" }} is better) · sampler {{ s.sampler }}
· pruning {{ "on" if s.pruning else "off" }}{% if s.config %} · config <code>{{ s.config }}</code>{% endif %}</p>

<h2>Best trial</h2>
{% if best %}<p>Trial <b>{{ best.number }}</b>: {{ s.metric }} <b>{{ "%.4f"|format(best.value) }}</b>
{% if best.report %}· <a href="{{ best.report }}">its report</a>{% endif %}</p>
<table><tr><th>parameter</th><th>value</th></tr>
{% for k, v in best.labels.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{% else %}<p class="worse">No trial completed yet.</p>{% endif %}

<h2>Parameter importances</h2>
{% if s.importances %}<p>How much each parameter accounts for the spread of {{ s.metric }} over the completed trials
(Optuna's default evaluator, PED-ANOVA; they sum to 1). Few trials make them rough.{% if s.importances_note %}
<span class="worse">{{ s.importances_note }}</span>{% endif %}</p>
<table class="numbers"><tr><th>parameter</th><th>importance</th></tr>
{% for k, v in s.importances.items() %}<tr><td>{{ k }}</td><td>{{ "%.3f"|format(v) }}</td></tr>{% endfor %}</table>
{% else %}<p>Not shown: {{ s.importances_note }}.</p>{% endif %}

{% if images %}<h2>{{ s.metric }} against each parameter</h2><div class="plots">
{% for title, data in images %}<figure><img alt="{{ title }}" src="data:image/png;base64,{{ data }}"><figcaption>{{ title }}</figcaption></figure>{% endfor %}
</div>{% endif %}

<h2>Trials</h2>
<table class="numbers"><tr><th>trial</th><th>state</th><th>{{ s.metric }}</th>{% for k in names %}<th>{{ k }}</th>{% endfor %}
<th>train s</th><th>trial s</th><th>run</th></tr>
{% for t in s.trials %}<tr><td>{{ t.number }}</td><td class="{{ 'failed' if t.state == 'fail' else '' }}">{{ t.state }}</td>
<td class="{{ 'best' if best and t.number == best.number else '' }}">{{ "–" if t.value is none else "%.4f"|format(t.value) }}</td>
{% for k in names %}<td>{{ t.labels.get(k, "") }}</td>{% endfor %}
<td>{{ "–" if t.train_seconds is none else "%.1f"|format(t.train_seconds) }}</td><td>{{ "–" if t.seconds is none else "%.0f"|format(t.seconds) }}</td>
<td>{% if t.error %}<span class="failed">{{ t.error }}</span>{% elif t.report %}<a href="{{ t.report }}">report</a>{% elif t.run_dir %}<code>trials/{{ t.number }}</code>{% endif %}</td></tr>
{% endfor %}</table>
<p>Each trial is an ordinary run folder under <code>trials/</code> (its config in <code>configs/</code>, its output in
<code>logs/</code>); the study is in <code>sweep.db</code>, so running the sweep again continues it.</p>
</body></html>
"""


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_sweep_report(out: Path) -> Path:
    out = Path(out)
    s = read_json_file(out / "sweep.json", "; run `tunesmith sweep` to make it")
    higher = s["direction"] == "maximize"
    for t in s["trials"]:
        t["labels"] = {k: _fmt(v) for k, v in t["labels"].items()}
        t["report"] = f"trials/{t['number']}/report.html" if (out / "trials" / str(t["number"]) / "report.html").is_file() else None
    best = next((t for t in s["trials"] if s["best"] and t["number"] == s["best"]["number"]), None)
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    images = []
    for i, (name, p) in enumerate(s["parameters"].items()):
        categories = [_label(c) for c in p["choices"]] if "choices" in p else None
        points = [(_label(t["params"][name]) if categories else t["params"][name], t["value"], t["state"])
                  for t in s["trials"] if name in t["params"] and t["state"] in ("complete", "pruned")]
        made = plots.metric_vs_parameter(points, name, s["metric"], higher, plot_dir / f"parameter-{i}.png",
                                         log_x=p.get("log", False), categories=categories,
                                         integer=p.get("type", "int" if all(isinstance(p.get(k), int) for k in ("low", "high")) else None) == "int")
        if made:
            images.append((f"{s['metric']} vs {name}", made))
    states = [t["state"] for t in s["trials"]]
    counts = f"{s['trials_counted']} of {s['trials_wanted']} trials done: " + ", ".join(
        f"{states.count(k)} {k}" for k in ("complete", "pruned", "fail", "running", "waiting") if k in states)
    return write_page(out / "sweep.html", TEMPLATE, name=out.name, s=s, higher=higher, best=best,
                      images=embedded(images), counts=counts, names=list(s["parameters"]))


def _label(value) -> str:
    """A choice as the plot's category axis shows it (the label tunesmith.experiments.sweep stores in the study)."""
    from tunesmith.sweep_config import label

    return str(label(value))
