"""The FastAPI app: one static page (static/) and a small JSON API.

    GET  /api/state                       images with object counts, categories, model, where to resume
    GET  /api/pixels?name=                the picture the model sees (PNG)
    POST /api/open      {name}            embedding ready (cached on disk, next image prefetched) + objects
    POST /api/predict   {name, points, labels, box}            -> 4 masks with predicted IoU
    POST /api/objects   {name, revision, points, labels, box, candidate, category_id}  accept an object
    POST /api/objects/delete {name, revision, id}
    GET  /api/objects?name=

Masks go to the page as row-major run lengths (first run = background), starting with the
background. An accepted object's mask is recomputed here from its prompts, so the file holds exactly
what the model gives, never pixels sent by a client. Image names are checked against the scanned
folder (400 for a path outside it); bodies over MAX_BODY_BYTES are refused with 413; a stale revision
gives 409 and an unreadable image 422, each with a message for the user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from projects.sam_finetune.annotator.cache import EmbeddingStore
from projects.sam_finetune.annotator.images import ImageFolder, PathRefused
from projects.sam_finetune.annotator.model import MAX_POINTS, AnnotationModel, Prompts
from projects.sam_finetune.annotator.store import CocoStore, NewObject, VersionConflict
from projects.sam_finetune.errors import DataError

STATIC = Path(__file__).parent / "static"
MAX_BODY_BYTES = 64 * 1024  # prompts only: a few points and a box

SHORTCUTS = [
    ("left click", "add an object point"), ("right click / shift+click", "add a background point"),
    ("drag", "draw a box"), ("wheel", "zoom"), ("space+drag / middle drag", "pan"), ("F", "fit the image"),
    ("1-4", "pick a mask candidate"), ("Enter", "accept the object"), ("Z", "undo (point, then object)"),
    ("Esc", "clear the prompts"), ("C", "next category"), ("Delete", "delete the selected object"),
    ("N / P", "next / previous image"),
]


@dataclass
class Session:
    images: ImageFolder
    model: AnnotationModel
    store: CocoStore
    embeddings: EmbeddingStore


class ImageRequest(BaseModel):
    name: str = Field(max_length=1024)


class PromptRequest(ImageRequest):
    points: list[tuple[float, float]] = Field(default_factory=list, max_length=MAX_POINTS)
    labels: list[int] = Field(default_factory=list, max_length=MAX_POINTS)
    box: tuple[float, float, float, float] | None = None

    def prompts(self) -> Prompts:
        return Prompts(points=[tuple(p) for p in self.points], labels=list(self.labels), box=self.box)


class AcceptRequest(PromptRequest):
    revision: int
    candidate: int = Field(ge=0, le=3)
    category_id: int


class DeleteRequest(ImageRequest):
    revision: int
    id: int


def mask_runs(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> run lengths over the row-major pixels, the first run being background (maybe 0)."""
    flat = mask.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    lengths = np.diff(np.concatenate([[0], changes, [flat.size]]))
    return ([0] if flat[0] else []) + lengths.tolist()


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes (counted as it arrives) with 413."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await JSONResponse({"detail": f"request body over {self.limit} bytes"}, 413)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, counted_receive, send)


def create_app(session: Session) -> FastAPI:
    app = FastAPI(title="sam_finetune annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    images, model, store, embeddings = session.images, session.model, session.store, session.embeddings

    @app.exception_handler(PathRefused)
    async def refused(_: Request, error: PathRefused) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(DataError)
    async def unreadable(_: Request, error: DataError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(VersionConflict)
    async def conflict(_: Request, error: VersionConflict) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=409)

    def objects_payload(name: str) -> list[dict[str, Any]]:
        return [{"id": ann["id"], "category_id": ann["category_id"], "area": ann["area"],
                 "runs": mask_runs(ann["mask"])} for ann in store.objects(name)]

    def image_payload(name: str) -> dict[str, Any]:
        return {"name": name, "revision": store.revision(name), "objects": objects_payload(name)}

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        counts = store.object_counts()
        return {"images": [{"name": name, "objects": counts[name]} for name in images.names],
                "categories": store.categories(), "resume": store.resume_name(), "model": model.description,
                "annotations": store.path.name, "shortcuts": SHORTCUTS}

    @app.get("/api/pixels")
    def pixels(name: str) -> Response:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(model.display_image(images.path(name)), cv2.COLOR_RGB2BGR))
        return Response(encoded.tobytes(), media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/open")
    def open_image(request: ImageRequest) -> dict[str, Any]:
        path = images.path(request.name)
        started = time.perf_counter()
        embedding, source = embeddings.get(path)
        seconds = time.perf_counter() - started
        next_name = images.next_name(request.name)
        embeddings.prefetch(images.path(next_name) if next_name else None)
        height, width = embedding.original_size
        return {**image_payload(request.name), "height": height, "width": width,
                "embedding": {"source": source, "seconds": round(seconds, 4)}}

    @app.get("/api/objects")
    def get_objects(name: str) -> dict[str, Any]:
        return image_payload(images.check(name))

    @app.post("/api/predict")
    def predict(request: PromptRequest) -> dict[str, Any]:
        embedding, _ = embeddings.get(images.path(request.name))
        started = time.perf_counter()
        try:
            prediction = model.predict(embedding, request.prompts())
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        seconds = time.perf_counter() - started
        return {"candidates": [{"runs": mask_runs(mask), "iou": float(iou), "area": int(mask.sum())}
                               for mask, iou in zip(prediction.masks, prediction.iou)],
                "seconds": round(seconds, 4)}

    @app.post("/api/objects")
    def accept(request: AcceptRequest) -> dict[str, Any]:
        embedding, _ = embeddings.get(images.path(request.name))
        prompts = request.prompts()
        try:
            prediction = model.predict(embedding, prompts)
            mask = prediction.masks[request.candidate]
            annotation = store.add_object(request.name, request.revision,
                                          NewObject(mask=mask, category_id=request.category_id,
                                                    prompts={**prompts.to_dict(), "candidate": request.candidate}),
                                          embedding.original_size)
        except ValueError as error:
            raise HTTPException(422, str(error)) from None
        return {**image_payload(request.name), "saved": annotation["id"], "version": store.version}

    @app.post("/api/objects/delete")
    def delete(request: DeleteRequest) -> dict[str, Any]:
        try:
            store.delete_object(request.name, request.revision, request.id)
        except KeyError as error:
            raise HTTPException(404, str(error.args[0])) from None
        return {**image_payload(request.name), "version": store.version}

    return app
