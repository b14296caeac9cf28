"""The web application: a page and a JSON API over :class:`jaxhash.serve.service.Service` (FastAPI).

Every action of the page is an endpoint under ``/api`` (see ``/docs`` for the generated OpenAPI
schema). Errors are JSON ``{"detail": message}`` with a 4xx status; with a token, every write
(train, index, import, delete) needs ``Authorization: Bearer TOKEN`` or ``X-Jaxhash-Token``.
"""

import hmac
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .files import RequestError
from .service import DEFAULT_MIN_IMAGES_PER_CLASS, TRAIN_METHODS, Service

__all__ = ["create_app"]

STATIC = Path(__file__).parent / "static"


def create_app(service: Service, token: Optional[str] = None, allowed_hosts=None):
    """The FastAPI application serving ``service``.

    ``token``: required for writes when given. ``allowed_hosts``: the names the server may be
    reached by (the Host header, port aside); a request naming another host is refused, so a web
    page of another site cannot reach a server on loopback by rebinding its DNS name. None: any.
    Whatever the host, a write whose ``Origin`` is another site is refused (no cross-site posts).
    """
    from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile  # noqa: PLC0415
    from fastapi.responses import FileResponse, JSONResponse, Response  # noqa: PLC0415
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer  # noqa: PLC0415
    from fastapi.staticfiles import StaticFiles  # noqa: PLC0415
    from pydantic import BaseModel, Field  # noqa: PLC0415

    from .. import __version__  # noqa: PLC0415

    # FastAPI's own /docs and /redoc load their scripts from a CDN, which an offline server cannot reach:
    # /docs is a page of ours instead, drawn from /openapi.json
    app = FastAPI(title="jaxhash image search", version=__version__, docs_url=None, redoc_url=None,
                  description="Search by example, index folders, train models on your own classes (Hu & Feng's "
                              "deep-learning image retrieval system, on jaxhash).")
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    @app.middleware("http")
    async def same_site_only(request: Request, call_next):
        """Refuse a Host this server is not (DNS rebinding), and writes sent by another site's page."""
        host = request.headers.get("host", "")
        if hosts is not None and _host_name(host) not in hosts:
            return JSONResponse(status_code=421, content={"detail": f"this server does not answer to host {host!r}"})
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null":
            if origin.split("://", 1)[-1].rstrip("/").lower() != host.lower():
                return JSONResponse(status_code=403, content={"detail": f"changes from another site ({origin}) are refused"})
        return await call_next(request)

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next):
        """A body declared larger than any upload may be is refused before it is received."""
        declared = request.headers.get("content-length")
        limit = max(service.limits.zip_bytes, service.limits.upload_bytes) + (1 << 20)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return JSONResponse(status_code=413, content={"detail": f"the request is larger than the limit of {limit:,} bytes"})
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, err: RequestError):
        return JSONResponse(status_code=err.status, content={"detail": str(err)})

    bearer = HTTPBearer(auto_error=False, description="the server's --token, needed for changes when it was given")

    def writer(request: Request, credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if token is None:
            return
        given = request.headers.get("x-jaxhash-token") or (credentials.credentials if credentials else None)
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "this server needs its token for changes: give it in the page's token field, or as "
                                     "the header  Authorization: Bearer TOKEN")

    write = [Depends(writer)]

    def read_upload(upload, limit: int, what: str) -> bytes:
        data = upload.file.read(limit + 1)
        if len(data) > limit:
            raise RequestError(f"the {what} is larger than the limit of {limit:,} bytes", 413)
        return data

    def save_upload(upload, limit: int) -> Path:
        """An uploaded zip to a temporary file (refused above ``limit`` bytes)."""
        tmp = tempfile.NamedTemporaryFile(dir=service.data_dir / "uploads", suffix=".zip", delete=False)
        written = 0
        with tmp:
            while chunk := upload.file.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    Path(tmp.name).unlink(missing_ok=True)
                    raise RequestError(f"the zip is larger than the limit of {limit:,} bytes", 413)
                tmp.write(chunk)
        return Path(tmp.name)

    def from_zip(upload, submit):
        """``submit(folder)`` on the checked, unpacked upload; the folder goes again if it is refused."""
        zip_path = save_upload(upload, service.limits.zip_bytes)
        try:
            folder = service.unpack_zip(zip_path)
        finally:
            zip_path.unlink(missing_ok=True)
        try:
            return submit(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    # -- page --------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    def api_page():
        return FileResponse(STATIC / "docs.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/api/health", tags=["maintenance"])
    def health():
        """Is the server up: uptime, database, worker threads, free disk, jobs waiting."""
        return service.health()

    @app.get("/api/disk", tags=["maintenance"])
    def disk():
        """Bytes the data folder holds, by part, and what freeing space would remove."""
        return service.disk_use()

    @app.post("/api/disk/free", tags=["maintenance"], dependencies=write)
    def free_space():
        """Remove the files of images no index holds and training checkpoints no job can resume from."""
        return service.free_space()

    @app.get("/api/settings", tags=["maintenance"])
    def settings():
        """What the page explains: limits, allowed roots, training methods, whether writes need a token."""
        limits = service.limits
        return {"allow_roots": [str(r) for r in service.allow_roots], "token_required": token is not None,
                "min_images_per_class": service.min_images_per_class, "paper_min_images_per_class": DEFAULT_MIN_IMAGES_PER_CLASS,
                "train_methods": list(TRAIN_METHODS), "presets": ["tiny", "cpu", "gpu"],
                "limits": {"upload_bytes": limits.upload_bytes, "zip_bytes": limits.zip_bytes,
                           "image_pixels": limits.image_pixels}}

    # -- models ------------------------------------------------------------------------------
    class ModelImport(BaseModel):
        path: str = Field(description="a folder saved by  jaxhash fit  (inside an allowed root)")
        name: Optional[str] = None

    @app.get("/api/models", tags=["models"])
    def list_models():
        """Every model with its status and training summary, and the indexes that use it."""
        models = service.store.list_models()
        for m in models:
            m["indexes"] = [i["id"] for i in service.store.indexes_of_model(m["id"])]
        return models

    @app.post("/api/models/import", tags=["models"], dependencies=write, status_code=201)
    def import_model(body: ModelImport):
        """Add a model saved by  jaxhash fit  (e.g. trained on another machine, or from your own weights)."""
        return service.store.model(service.import_model(body.path, body.name))

    @app.get("/api/models/{model_id}", tags=["models"])
    def get_model(model_id: int):
        model = service.model_row(model_id)
        model["curve"] = service.store.curve_points(model["job_id"]) if model["job_id"] else []
        return model

    @app.delete("/api/models/{model_id}", tags=["models"], dependencies=write)
    def delete_model(model_id: int, with_indexes: bool = False):
        """Delete a model (refused while an index uses it, unless with_indexes=true deletes them too)."""
        return {"deleted_model": model_id, "deleted_indexes": service.delete_model(model_id, with_indexes)}

    # -- indexes -----------------------------------------------------------------------------
    class IndexCreate(BaseModel):
        name: str = Field(min_length=1, max_length=200)
        model_id: int
        partitioned: bool = Field(False, description="file images under their predicted class (cnn models)")

    class FolderRequest(BaseModel):
        folder: str = Field(description="a folder on the server, inside an allowed root")

    class ImageIds(BaseModel):
        image_ids: list[int]

    def index_record(row: dict) -> dict:
        return {**row, "index_bytes": service.index_disk_bytes(row["id"]), "image_bytes": service.images_disk_bytes(row["id"]),
                "jobs": service.store.running_jobs_on_index(row["id"])}

    @app.get("/api/indexes", tags=["indexes"])
    def list_indexes():
        """Every index with its size, disk use and running jobs."""
        return [index_record(r) for r in service.store.list_indexes()]

    @app.post("/api/indexes", tags=["indexes"], dependencies=write, status_code=201)
    def create_index(body: IndexCreate):
        return index_record(service.index_row(service.create_index(body.name, body.model_id, body.partitioned)))

    @app.get("/api/indexes/{index_id}", tags=["indexes"])
    def get_index(index_id: int):
        return index_record(service.index_row(index_id))

    @app.get("/api/indexes/{index_id}/images", tags=["indexes"])
    def index_images(index_id: int, offset: int = 0, limit: int = 100):
        """The images an index holds, a page at a time."""
        service.index_row(index_id)
        total, images = service.store.index_images(index_id, max(0, offset), max(1, min(limit, 1000)))
        return {"total": total, "images": images}

    @app.post("/api/indexes/{index_id}/folder", tags=["indexes"], dependencies=write, status_code=202)
    def index_folder(index_id: int, body: FolderRequest):
        """Start a job that adds the images of a server folder (duplicates are skipped)."""
        return service.job_record(service.submit_index_job(index_id, folder=body.folder))

    @app.post("/api/indexes/{index_id}/zip", tags=["indexes"], dependencies=write, status_code=202)
    def index_zip(index_id: int, file: UploadFile = File(...)):
        """Start a job that adds the images of an uploaded zip file."""
        service.index_row(index_id)
        return from_zip(file, lambda folder: service.job_record(service.submit_index_job(index_id, upload_dir=folder)))

    @app.post("/api/indexes/{index_id}/remove", tags=["indexes"], dependencies=write)
    def remove_images(index_id: int, body: ImageIds):
        """Remove images from an index (the stored files stay for other indexes)."""
        return {"removed": service.remove_images(index_id, body.image_ids), "ntotal": service.index_row(index_id)["ntotal"]}

    @app.post("/api/indexes/{index_id}/clear", tags=["maintenance"], dependencies=write)
    def clear_index(index_id: int):
        """Empty an index (its model stays)."""
        service.clear_index(index_id)
        return index_record(service.index_row(index_id))

    @app.post("/api/indexes/{index_id}/rebuild", tags=["maintenance"], dependencies=write, status_code=202)
    def rebuild_index(index_id: int):
        """Start a job that encodes the index's stored images again into a new file."""
        return service.job_record(service.submit_rebuild_job(index_id))

    @app.delete("/api/indexes/{index_id}", tags=["indexes"], dependencies=write)
    def delete_index(index_id: int):
        service.delete_index(index_id)
        return {"deleted_index": index_id}

    # -- search ------------------------------------------------------------------------------
    @app.post("/api/search", tags=["search"])
    def search(index_id: int = Form(...), k: int = Form(20), rerank: int = Form(0), top_classes: int = Form(1),
               image_id: Optional[int] = Form(None), file: Optional[UploadFile] = File(None)):
        """Search by example: an uploaded image (multipart ``file``) or a stored ``image_id``.

        Results carry the Hamming distance, and similarity = 1 / (1 + distance) of the measure used
        (Euclidean on the model's features with ``rerank`` > 0, a short-list of that many).
        """
        data = None if file is None else read_upload(file, service.limits.upload_bytes, "image")
        # plain JSON types already: skip FastAPI's generic encoder (a tenth of the request's time)
        return JSONResponse(service.search(index_id, k, data=data, image_id=image_id, rerank=rerank, top_classes=top_classes))

    @app.get("/api/images/{image_id}", tags=["images"])
    def image_file(image_id: int):
        row = service.image_row(image_id)
        return FileResponse(service.data_dir / row["path"], headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/images/{image_id}/thumbnail", tags=["images"])
    def thumbnail(image_id: int):
        return Response(service.thumbnail(image_id), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/images/{image_id}/info", tags=["images"])
    def image_info(image_id: int):
        return service.image_row(image_id)

    # -- training ----------------------------------------------------------------------------
    class TrainRequest(BaseModel):
        name: str = Field(min_length=1, max_length=200)
        folder: str = Field(description="a server folder with one sub-folder per class, inside an allowed root")
        method: str = Field("cnn-hash", description="cnn-hash (a learned hash layer, Zelensky et al.; Hamming distances "
                                                    "that mean something from few bits) or cnn-softmax (Hu & Feng's class "
                                                    "probabilities; needs a confident classifier and a bit per class)")
        n_bits: int = Field(64, ge=8, le=4096)
        preset: str = "cpu"
        epochs: Optional[int] = Field(None, ge=1, le=10000)
        min_images_per_class: Optional[int] = Field(None, ge=2)
        seed: int = 0

    def started(job_model) -> dict:
        job_id, model_id = job_model
        return {**service.job_record(job_id), "model_id": model_id}

    @app.post("/api/train", tags=["training"], dependencies=write, status_code=202)
    def train(body: TrainRequest):
        """Queue training a model on a server folder with one sub-folder per class."""
        return started(service.submit_train_job(body.name, body.method, body.n_bits, body.preset, body.epochs, folder=body.folder,
                                                min_images_per_class=body.min_images_per_class, seed=body.seed))

    @app.post("/api/train/zip", tags=["training"], dependencies=write, status_code=202)
    def train_zip(name: str = Form(...), method: str = Form("cnn-hash"), n_bits: int = Form(64), preset: str = Form("cpu"),
                  epochs: Optional[int] = Form(None), min_images_per_class: Optional[int] = Form(None), seed: int = Form(0),
                  file: UploadFile = File(...)):
        """Queue training on an uploaded zip with one folder per class."""
        return from_zip(file, lambda folder: started(service.submit_train_job(
            name, method, n_bits, preset, epochs, upload_dir=folder, min_images_per_class=min_images_per_class, seed=seed)))

    # -- jobs --------------------------------------------------------------------------------
    @app.get("/api/jobs", tags=["jobs"])
    def list_jobs(limit: int = 50):
        """The newest jobs first (without their logs)."""
        jobs = service.store.list_jobs(max(1, min(limit, 1000)))
        for j in jobs:
            j.pop("log", None)
        return jobs

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: int):
        """A job with its progress, log, and (training) curve."""
        return service.job_record(job_id)

    @app.post("/api/jobs/{job_id}/cancel", tags=["jobs"], dependencies=write)
    def cancel_job(job_id: int):
        """Cancel a queued job, or stop a running one at its next chunk of images or epoch (what it did stays)."""
        return {"id": job_id, "status": service.cancel_job(job_id)}

    @app.post("/api/jobs/{job_id}/resume", tags=["jobs"], dependencies=write)
    def resume_job(job_id: int):
        """Queue an interrupted, failed or cancelled job again (training resumes from its last checkpoint)."""
        service.resume_job(job_id)
        return service.job_record(job_id)

    return app


def _host_name(host: str) -> str:
    """The name of a Host header without its port: ``127.0.0.1:8000`` -> ``127.0.0.1``, ``[::1]:80`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
