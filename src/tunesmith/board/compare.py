"""Comparing finished runs on the board, as compare.html does: the key metric (base -> tuned) against trainable
parameters, training time and peak memory, forgetting where measured. Runs measured on other eval data than the
first one (the eval fingerprint in manifest.json) are refused with the reason."""

from __future__ import annotations

from tunesmith.board.paths import Roots
from tunesmith.board.scan import PRIMARY, read_eval, scalars, status
from tunesmith.eval.metrics import direction
from tunesmith.runs.folder import run_marker

MAX_RUNS = 20


def comparison(roots: Roots, ids: list[str]) -> dict:
    """{"metric", "higher", "rows", "refused": [(id, why)], "best": {column: [ids]}}."""
    rows, refused = [], []
    for run_id in ids[:MAX_RUNS]:
        root, _, rel = run_id.partition("/")
        folder = roots.resolve(root, rel)
        manifest = run_marker(folder)
        if manifest is None or status(folder, manifest) != "finished":
            refused.append((run_id, "not a finished run (only finished runs have results to compare)"))
            continue
        results = read_eval(folder)
        fingerprint = (manifest.get("data_fingerprint") or {}).get("eval")
        if rows and fingerprint != rows[0]["fingerprint"]:
            refused.append((run_id, f"measured on other eval data (fingerprint {fingerprint}) than {rows[0]['id']} "
                                    f"({rows[0]['fingerprint']}): its numbers are not comparable"))
            continue
        forgetting = {t: f.get("change") for t, f in (results.get("forgetting") or {}).items() if isinstance(f, dict)}
        memory = manifest.get("peak_memory") or {}
        rows.append({"id": run_id, "name": rel, "method": manifest.get("method"), "fingerprint": fingerprint,
                     "base": scalars(results.get("base")), "tuned": scalars(results.get("tuned")),
                     "directions": results.get("directions") or {},
                     "trainable_params": manifest.get("trainable_params"), "train_seconds": manifest.get("train_seconds"),
                     "tokens_per_second": manifest.get("tokens_per_second"),
                     "peak_memory_mb": memory.get("peak_cuda_mb") or memory.get("peak_rss_mb"),
                     "forgetting_mean": sum(forgetting.values()) / len(forgetting) if forgetting else None,
                     "machine": (manifest.get("machine") or {}).get("summary")})
    present = {k for r in rows for k in r["tuned"]}
    metric = next((m for m in PRIMARY if m in present), next(iter(sorted(present)), None))
    recorded = next((r["directions"] for r in rows if r["directions"].get(metric)), None)
    higher = direction(metric or "", recorded) == "max"
    for r in rows:
        r["metric"], r["metric_base"] = r["tuned"].get(metric), r["base"].get(metric)
    return {"metric": metric, "higher": higher, "rows": rows, "refused": refused, "best": best(rows, higher)}


def best(rows: list[dict], higher: bool) -> dict:
    """The ids best in each ranked column: the metric (its direction), fewer parameters, less time and memory."""
    ranked = {"metric": higher, "trainable_params": False, "train_seconds": False, "peak_memory_mb": False,
              "tokens_per_second": True, "forgetting_mean": True}
    out = {}
    for key, more in ranked.items():
        values = [(r[key], r["id"]) for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            top = (max if more else min)(v for v, _ in values)
            out[key] = [i for v, i in values if v == top]
    return out
