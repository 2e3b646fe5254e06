"""The panel's page and its strings (not in the OpenAPI document); ``/static`` is a mount."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from edge.panel import models as m
from edge.panel.deps import Hub
from edge.panel.errors import ApiError
from edge.panel.hub import I18N

LANGUAGES: Final = ("en", "de")

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def page(request: Request, hub: Hub) -> HTMLResponse:
    # index.html as create_app read it, with this build's assets digest and the language.
    index: str = request.app.state.index_html
    html = index.replace("{{ASSETS}}", hub.assets).replace("{{LANGUAGE}}", hub.cfg.panel.language)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("/i18n/{language}.json")
async def catalog(language: str) -> FileResponse:
    if language not in LANGUAGES:
        raise ApiError(
            404,
            m.ErrorBody(code="not_found", message=f"no strings for language {language!r}"),
        )
    return FileResponse(I18N / f"{language}.json", headers={"Cache-Control": "no-cache"})
