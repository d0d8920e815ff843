"""The device's HTTP API (FastAPI): /predict, /capture, /health, /events, /metrics.

Bad uploads are the client's problem and get 413 (too large), 415 (not an image) or 422 (an image that
does not decode); they never reach the model and never produce a 500. With `EDGEKIT_API_TOKEN` set,
every endpoint except /health needs `Authorization: Bearer <token>`; the API's own description (/docs,
/openapi.json: the endpoints and fields, no data) stays public.
"""

from __future__ import annotations

import io
import logging
import secrets
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, get_type_hints

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, create_model

from edgekit import __version__
from edgekit.edge.classify import Classification
from edgekit.edge.preprocess import upright
from edgekit.edge.service import NoFrame

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000
"""Images above this many pixels are refused with 413 before decoding (decompression bombs)."""
BODY_OVERHEAD = 64 * 1024
"""Room for multipart headers and boundaries on top of the image size limit."""
MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif",
         b"BM": "bmp", b"II*\x00": "tiff", b"MM\x00*": "tiff"}


Prediction = create_model(
    "Prediction", __config__=ConfigDict(extra="forbid"),
    __doc__="A classified image: the classifier's result (`edgekit.edge.classify.Classification`) and its event.",
    **{name: (hint, ...) for name, hint in get_type_hints(Classification).items()},
    event_id=(int, ...), image_path=(str | None, None))


class Problem(BaseModel):
    detail: str


def sniff(head: bytes) -> str | None:
    """The image format from the first bytes, or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in MAGIC.items() if head.startswith(magic)), None)


def decode_image(data: bytes, content_type: str | None) -> Any:
    """A decoded RGB PIL image, or an HTTPException with 415/413/422."""
    from PIL import Image

    fmt = sniff(data[:16])
    if fmt is None and not (content_type or "").lower().startswith("image/"):
        raise HTTPException(415, f"not an image (content type {content_type or 'none'}); send JPEG, PNG, BMP, "
                                 "GIF, TIFF or WebP")
    try:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > MAX_PIXELS:
            raise HTTPException(413, f"image is {im.width}x{im.height}; the limit is {MAX_PIXELS} pixels")
        im.load()
        return upright(im).convert("RGB")
    except HTTPException:
        raise
    except Image.DecompressionBombError:  # so large that PIL refuses to open it at all
        raise HTTPException(413, f"image is above PIL's decompression-bomb limit; the limit is {MAX_PIXELS} pixels")
    except Exception as e:  # PIL raises many kinds (OSError, SyntaxError, ValueError, bombs...)
        raise HTTPException(422, f"the image could not be decoded: {type(e).__name__}")


def _guards(app: FastAPI, settings: Any) -> Any:
    """Install the body-size guard on `app` and return the bearer-token dependency."""
    bearer = HTTPBearer(auto_error=False)

    def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = settings.api_token
        if token and (creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Any:
        # Refuse before the multipart parser spools a huge body to the Pi's SD card. A body without a
        # Content-Length (chunked) is counted as it streams by FastAPI's max_body_size (create_app).
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload_bytes + BODY_OVERHEAD:
            return JSONResponse({"detail": f"upload is larger than {settings.max_upload_bytes} bytes"}, 413)
        return await call_next(request)

    return auth


def create_app(service: Any) -> FastAPI:
    """The API for a running `Service`."""
    settings = service.settings
    app = FastAPI(title="edgekit device API", version=__version__,
                  description="Wake-word and camera classification service on the device.",
                  max_body_size=settings.max_upload_bytes + BODY_OVERHEAD)
    auth = _guards(app, settings)
    problems: dict[int | str, dict[str, Any]] = {c: {"model": Problem} for c in (401, 409, 413, 415, 422, 503)}

    @app.post("/predict", response_model=Prediction, responses=problems, dependencies=[Depends(auth)])
    def predict(file: UploadFile = File(..., description="the image (JPEG, PNG, ...)")) -> Any:
        """Classify an uploaded image with the deployed model."""
        if service.classifier is None:
            raise HTTPException(503, "no image classifier is configured (MODEL_PATH)")
        data = file.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"upload is larger than {settings.max_upload_bytes} bytes")
        image = decode_image(data, file.content_type)
        return service.classify(image, source="api")

    @app.post("/capture", response_model=Prediction, responses=problems, dependencies=[Depends(auth)])
    def capture() -> Any:
        """Classify the next camera frame now (409 when no camera runs, 503 when it gives no frame)."""
        try:
            return service.request_capture()
        except LookupError as e:
            raise HTTPException(409, str(e))
        except FutureTimeout:
            raise HTTPException(503, "the camera gave no frame in time")
        except NoFrame as e:
            raise HTTPException(503, str(e))

    @app.get("/health")
    def health() -> JSONResponse:
        """Model versions, sources up/down, uptime; 503 when a configured source is down."""
        ok, report = service.health()
        return JSONResponse(report, status_code=200 if ok else 503)

    @app.get("/events", dependencies=[Depends(auth)])
    def events(since: float = Query(0.0, description="unix seconds; events strictly after it", allow_inf_nan=False),
               after: int = Query(0, ge=0, description="event id; events recorded after it (for paging)"),
               limit: int = Query(1000, ge=1, le=10000), kind: str | None = Query(None)) -> dict[str, Any]:
        """Recorded events (wake words, classifications), oldest first; page with `after=next_after`."""
        rows = service.events.since(since, limit=limit, kind=kind, after=after)
        return {"events": rows, "next_since": rows[-1]["time"] if rows else since,
                "next_after": rows[-1]["id"] if rows else after}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(auth)])
    def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return app
