// tunesmith board: the runs table (polled, sortable, filterable), a run's live curves (metrics.jsonl polled from
// a byte offset, drawn as inline SVG), and the try box. No inline scripts (the CSP allows /static only); every
// text from a run is put in the page with textContent, never as HTML.
"use strict";
const CSRF = document.body.dataset.csrf;
const SVG = "http://www.w3.org/2000/svg";
const COLUMNS = ["name", "status", "objective", "method", "base", "data", "metric", "metric_base", "metric_tuned",
  "trainable_params", "train_seconds", "tokens_per_second", "peak_memory_mb", "machine"];

function num(v, digits) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  return Math.abs(v) < 1000 ? v.toFixed(digits === undefined ? 4 : digits) : Math.round(v).toLocaleString("en-US");
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// --- the runs table ---------------------------------------------------------------------------------------------
const table = { rows: [], key: "started", desc: true };

function runRow(r, checked) {
  const tr = el("tr");
  tr.dataset.id = r.id; tr.dataset.status = r.status;
  const box = el("input"); box.type = "checkbox"; box.name = "run"; box.value = r.id; box.checked = checked.has(r.id);
  const td0 = el("td"); td0.appendChild(box); tr.appendChild(td0);
  const link = el("a", r.name); link.href = "/run/" + r.id.split("/").map(encodeURIComponent).join("/");
  const td1 = el("td"); td1.appendChild(link); tr.appendChild(td1);
  const step = r.status === "running" && r.step ? ` · step ${r.step}` + (r.max_steps > 0 ? `/${r.max_steps}` : "") : "";
  tr.appendChild(el("td", r.status + step, "status " + r.status));
  const digits = { train_seconds: 1, tokens_per_second: 0, peak_memory_mb: 0 };
  for (const key of COLUMNS.slice(2)) {
    const v = r[key];
    const td = el("td", typeof v === "number" ? num(v, digits[key]) : (v || ""));
    if ((key === "base" || key === "data") && v) { td.textContent = String(v).split("/").pop(); td.title = v; }
    tr.appendChild(td);
  }
  return tr;
}

function renderRuns() {
  const body = document.querySelector("#runs tbody");
  const checked = new Set([...body.querySelectorAll("input:checked")].map(b => b.value));
  const words = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  const shown = table.rows.filter(r => words.every(w => COLUMNS.some(k => String(r[k] ?? "").toLowerCase().includes(w))));
  shown.sort((a, b) => {
    const x = a[table.key], y = b[table.key];
    const c = (x === null || x === undefined) ? 1 : (y === null || y === undefined) ? -1 :
      (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
    return table.desc ? -c : c;
  });
  body.replaceChildren(...shown.map(r => runRow(r, checked)));
  const empty = document.getElementById("empty");
  if (empty) empty.hidden = table.rows.length > 0;
}

async function pollRuns() {
  try {
    const res = await fetch("/api/runs", { cache: "no-store" });
    if (res.ok) {
      table.rows = (await res.json()).runs;
      renderRuns();
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    }
  } finally {
    setTimeout(pollRuns, 2000);
  }
}

function runsPage() {
  document.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => {
    table.desc = table.key === th.dataset.key ? !table.desc : false;
    table.key = th.dataset.key;
    renderRuns();
  }));
  document.getElementById("filter").addEventListener("input", renderRuns);
  pollRuns();
}

// --- one run: live curves ---------------------------------------------------------------------------------------
const SKIP = /runtime|per_second|samples|epoch|flos|step|_time/;

function draw(svg, series, xname) {
  xname = xname || "step";
  const W = 480, H = 220, L = 48, B = 24, pad = 8;
  const all = Object.values(series).flat();
  svg.replaceChildren();
  svg.dataset.points = all.length;
  if (!all.length) { const t = document.createElementNS(SVG, "text"); t.setAttribute("x", 20); t.setAttribute("y", 110); t.textContent = "no points yet"; svg.appendChild(t); return; }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - pad), sy = y => H - B - (y - y0) / (y1 - y0) * (H - B - pad);
  const label = (x, y, text, anchor, cls) => { const t = document.createElementNS(SVG, "text"); t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor || "start"); if (cls) t.setAttribute("class", cls); t.textContent = text; svg.appendChild(t); };
  label(L - 4, sy(y1) + 4, y1.toPrecision(3), "end"); label(L - 4, sy(y0), y0.toPrecision(3), "end");
  label(L, H - 6, xname + " " + +x0.toPrecision(4)); label(W - pad, H - 6, xname + " " + +x1.toPrecision(4), "end");
  const axis = document.createElementNS(SVG, "path"); axis.setAttribute("d", `M${L},${pad} V${H - B} H${W - pad}`); axis.setAttribute("class", "axis"); svg.appendChild(axis);
  Object.entries(series).forEach(([name, pts], i) => {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.map(p => sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1)).join(" "));
    line.setAttribute("class", "series s" + (i % 6));
    svg.appendChild(line);
    pts.forEach(p => { const c = document.createElementNS(SVG, "circle"); c.setAttribute("cx", sx(p[0]).toFixed(1)); c.setAttribute("cy", sy(p[1]).toFixed(1)); c.setAttribute("r", 2); c.setAttribute("class", "s" + (i % 6)); svg.appendChild(c); });
    label(W - pad, pad + 12 + 14 * i, name, "end", "legend s" + (i % 6));
  });
}

function runPage() {
  const id = document.body.dataset.run, path = id.split("/").map(encodeURIComponent).join("/");
  const loss = [], evals = {};
  let offset = 0, status = document.body.dataset.status;
  function take(data) {  // one batch of new metrics lines; false when the page must reload (the status changed)
    offset = data.offset;
    for (const r of data.rows) {
      if (typeof r.step !== "number") continue;
      if (typeof r.loss === "number") loss.push([r.step, r.loss]);
      for (const [k, v] of Object.entries(r)) if (k.startsWith("eval_") && typeof v === "number" && !SKIP.test(k.slice(5))) (evals[k] = evals[k] || []).push([r.step, v]);
      document.getElementById("step").textContent = r.step;
    }
    draw(document.getElementById("loss-chart"), { loss });
    draw(document.getElementById("eval-chart"), evals);
    if (data.pace.steps_per_second) document.getElementById("rate").textContent = data.pace.steps_per_second;
    if (data.pace.seconds_left !== undefined && data.pace.seconds_left !== null) document.getElementById("left").textContent = Math.round(data.pace.seconds_left) + " s";
    const log = document.getElementById("log");
    if (log && data.log) log.textContent = data.log;
    if (data.status !== status) { location.reload(); return false; }
    return ["running", "starting"].includes(data.status);
  }
  async function poll() {  // without EventSource: ask every second
    let again = true;
    try {
      const res = await fetch(`/api/metrics/${path}?offset=${offset}`, { cache: "no-store" });
      if (res.ok) again = take(await res.json());
    } finally {
      if (again) setTimeout(poll, 1000);
    }
  }
  if (window.EventSource) {  // server-sent events: the server pushes each new batch of lines
    const source = new EventSource(`/api/events/${path}?offset=0`);
    source.onmessage = ev => { if (!take(JSON.parse(ev.data))) source.close(); };
  } else {
    poll();
  }
  const form = document.getElementById("try");
  if (form) form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const tuned = document.getElementById("tuned"), base = document.getElementById("base");
    tuned.textContent = "…"; base.textContent = "";
    const res = await fetch(`/api/try/${path}`, { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
      body: JSON.stringify({ text: document.getElementById("try-text").value, max_new_tokens: Number(document.getElementById("try-max").value) }) });
    const data = await res.json();
    if (!res.ok) { tuned.textContent = data.error; return; }
    if (data.kind === "classify") { tuned.textContent = JSON.stringify(data.prediction, null, 2); base.textContent = "(a classifier: the tuned model's label)"; }
    else { tuned.textContent = data.tuned; base.textContent = data.base ?? ""; }
    tuned.dataset.done = "1";
  });
}

// --- compare: the metric against trainable parameters, time and memory --------------------------------------------
function comparePage() {
  const node = document.getElementById("compare-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  const axes = [["vs-params", "trainable_params", "log10 params", Math.log10], ["vs-time", "train_seconds", "train s", x => x],
    ["vs-memory", "peak_memory_mb", "peak MB", x => x]];
  for (const [id, key, name, f] of axes) {
    const series = {};
    for (const r of data.rows) if (typeof r[key] === "number" && typeof r.metric === "number") series[r.name] = [[f(r[key]), r.metric]];
    draw(document.getElementById(id), series, name);
  }
}

({ runs: runsPage, run: runPage, compare: comparePage })[document.body.dataset.page]?.();
