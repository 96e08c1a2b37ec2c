"""The owner's routes under /o/TOKEN: the study page, its figures as JSON, and the answers as training data
(JSON Lines in export.py's formats). Each route checks the owner token first."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from tunesmith.studio import export, owner
from tunesmith.studio.web import BadRequest, db, owner_of, page


def owner_page(token: str, request: Request, conn=Depends(db)):
    owner_of(conn, token)
    data = owner.owner_data(conn)
    generation = request.app.state.generation  # shown while it runs
    job = generation.progress if generation is not None and generation.alive() else None
    return page(request, "owner.html", title="Study", token=token, data=data, images=owner.plots(data), job=job)


def owner_stats(token: str, conn=Depends(db)):
    owner_of(conn, token)
    return owner.json_ready(owner.owner_data(conn))


def owner_export(token: str, fmt: str, conn=Depends(db)):
    owner_of(conn, token)
    if fmt not in export.FORMATS:
        raise BadRequest(f"there is no export format {fmt!r}; the studio exports {', '.join(export.FORMATS)}:",
                         title="Unknown export format", back=f"/o/{token}",
                         links=tuple((f"{f}.jsonl ({export.COLUMNS[f]})", f"/o/{token}/export/{f}.jsonl")
                                     for f in export.FORMATS))
    rows, _ = export.rows_for(conn, fmt)
    return Response(export.to_jsonl(rows), media_type="application/jsonl; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="studio-{fmt}.jsonl"'})


def add_routes(app: FastAPI) -> None:
    """The owner's routes, on the app itself (so `app.routes` lists each one, as the security test reads them)."""
    app.get("/o/{token}", response_class=HTMLResponse)(owner_page)
    app.get("/o/{token}/api/stats")(owner_stats)
    app.get("/o/{token}/export/{fmt}.jsonl")(owner_export)
