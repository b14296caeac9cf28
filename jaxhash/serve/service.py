"""The search system as plain Python: models, indexes, images, search and jobs over one data folder.

The web application (:mod:`jaxhash.serve.app`) is a thin layer of routes over :class:`Service`;
tests and scripts can use it directly. Everything the service knows lives in its database
(:class:`jaxhash.serve.store.Store`) and in files under ``data_dir``:
``images/`` (every image once, by content hash), ``models/<id>/`` (saved hashers),
``indexes/<id>.jhx`` (index files, written atomically), ``jobs/<id>/`` (training checkpoints),
``uploads/`` (unpacked zip files). A new Service on the same folder finds everything as it was;
jobs that were running when the last one stopped are marked ``interrupted`` and can be resumed.
Image files stay when an index lets them go (another index may take them again without reading them);
:meth:`Service.free_space` removes those no index holds, and checkpoints no job can resume from.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..images import decode_image
from .files import ImageFile, Limits, RequestError, allowed_folder, class_counts, extract_zip, list_image_files
from .store import Store

__all__ = ["Service", "TRAIN_METHODS", "DEFAULT_MIN_IMAGES_PER_CLASS"]

TRAIN_METHODS = ("cnn-hash", "cnn-softmax")
DEFAULT_MIN_IMAGES_PER_CLASS = 100  # Hu & Feng ask for more than 100 images of every class
THUMBNAIL_PIXELS = 160
DEFAULT_K = 20  # results of a search unless asked (the page's default)
MAX_RERANK = 10_000  # the longest short-list a search may re-rank
_SAVE_EVERY_SECONDS = 20.0  # an index job writes its file at least this often (a crash loses no more)


def _image_header(data: bytes, limits: Limits) -> tuple[int, int, str]:
    """``(width, height, extension)`` of encoded image bytes, checked against the pixel limit."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    if len(data) == 0:
        raise RequestError("the file is empty, not an image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height, fmt = img.width, img.height, (img.format or "").lower()
    except Image.DecompressionBombError as err:  # Pillow refuses to open it: its size is in the message
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow opens"
        raise RequestError(f"the image has {pixels}, more than the limit of {limits.image_pixels:,}", 413) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise RequestError("the file is not an image that can be read (JPEG, PNG, GIF, BMP, TIFF or WebP)", 415) from None
    if width * height > limits.image_pixels:
        raise RequestError(f"the image has {width}x{height} pixels, more than the limit of {limits.image_pixels:,}", 413)
    ext = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp"}.get(fmt, ".img")
    return width, height, ext


class _Waiting:
    __slots__ = ("item", "wake", "lead", "finished", "result", "error")

    def __init__(self, item):
        self.item, self.wake, self.lead, self.finished, self.result, self.error = item, threading.Event(), False, False, None, None


class QueryBatcher:
    """Runs calls with the same key together: ``run(key, items) -> results``, one result per item.

    While a batch of a key runs, the calls that arrive wait; when it ends, one of them runs all
    that are waiting (up to ``max_batch``) as the next batch, after ``window`` seconds for those
    about to come. Alone, a call waits only the window; under load, batches grow by themselves.
    Concurrent searches so share one CNN pass and one index scan: on two cores with eight clients,
    that is what keeps each one's latency low. Each caller gets its own result, or the error of
    its batch.
    """

    def __init__(self, run, window: float = 0.002, max_batch: int = 64):
        self.run, self.window, self.max_batch = run, float(window), int(max_batch)
        self._lock = threading.Lock()
        self._waiting: dict = {}  # key -> calls not yet taken into a batch
        self._busy: set = set()  # keys with a batch running

    def submit(self, key, item):
        me = _Waiting(item)
        with self._lock:
            self._waiting.setdefault(key, []).append(me)
            if key not in self._busy:
                self._busy.add(key)
                me.lead = True
        if not me.lead:
            me.wake.wait()  # with a result, or to lead the next batch
        if not me.finished:
            self._lead(key)
        if me.error is not None:
            raise me.error
        return me.result

    def _lead(self, key) -> None:
        if self.window > 0:  # callers finishing the last batch come back within a moment: take them along
            time.sleep(self.window)
        with self._lock:
            queue = self._waiting[key]
            batch = queue[: self.max_batch]
            del queue[: self.max_batch]
        try:
            results = self.run(key, [w.item for w in batch])
            for waiting, result in zip(batch, results):
                waiting.result = result
        except BaseException as err:  # noqa: BLE001 - every caller of the batch gets the error
            for waiting in batch:
                waiting.error = err
        with self._lock:
            queue = self._waiting[key]
            if queue:
                queue[0].lead = True  # it wakes and runs the next batch
                successor = queue[0]
            else:
                successor = None
                del self._waiting[key]
                self._busy.discard(key)
        for waiting in batch:
            waiting.finished = True
            waiting.wake.set()
        if successor is not None:
            successor.wake.set()


class DataDirInUseError(OSError):
    """Another server holds the data folder."""


def _lock_data_dir(data_dir: Path):
    """Hold ``data_dir/serve.lock`` for this process (an open file with an exclusive ``flock``, released when
    it is closed or the process ends), so that a second server on the same folder is refused instead of
    marking the first one's running jobs interrupted and running them again."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # not POSIX: no lock
        return None
    handle = open(data_dir / "serve.lock", "a+")  # noqa: SIM115 - held until stop()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise DataDirInUseError(f"another jaxhash serve{f' (process {holder})' if holder else ''} is using {data_dir}: "
                                "stop it first, or give this one another --data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class Service:
    """The image search system over ``data_dir``.

    Args:
      data_dir: the folder that holds all state (created if missing).
      database_url: a SQLAlchemy URL; default SQLite ``data_dir/jaxhash.sqlite`` in WAL mode.
      allow_roots: server-side folders that index and training jobs may read (and nothing else).
      limits: upload, pixel and zip limits (:class:`jaxhash.serve.files.Limits`).
      min_images_per_class: the least images every class of a training folder must have.
      workers: start the job threads (one for training, one for indexing).
    """

    def __init__(self, data_dir, database_url: str | None = None, allow_roots=(), limits: Limits = Limits(),
                 min_images_per_class: int = DEFAULT_MIN_IMAGES_PER_CLASS, workers: bool = True):
        self.data_dir = Path(data_dir).expanduser().resolve()
        store = Store(database_url) if database_url else None  # a bad URL is refused before any folder is made
        try:
            for sub in ("images", "models", "indexes", "jobs", "uploads", "thumbnails"):
                (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
            self._data_dir_lock = _lock_data_dir(self.data_dir)
        except BaseException:
            if store is not None:
                store.close()
            raise
        try:
            self.store = store or Store.in_folder(self.data_dir)
        except BaseException:
            self._release_data_dir()
            raise
        self.allow_roots = [Path(r).expanduser().resolve() for r in allow_roots]
        self.limits = limits
        self.min_images_per_class = int(min_images_per_class)
        self.started = time.time()
        self.interrupted_at_start = self.store.mark_interrupted()
        self._hashers: dict[int, object] = {}
        self._contexts: dict[int, tuple] = {}
        self._index_locks: dict = {}  # index id -> RLock
        self._cancelled: set[int] = set()  # running jobs asked to stop
        self._class_names: dict[int, list | None] = {}  # model id -> its class names
        self._images_lock = threading.Lock()  # held by index jobs (they add images before the index holds them) and free_space
        self._image_cache: dict[int, dict] = {}
        self._cache_lock = threading.Lock()
        self._batcher = QueryBatcher(self._search_batch)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if workers:
            self.start_workers()

    # -- workers ---------------------------------------------------------------------------
    def start_workers(self) -> None:
        from .jobs import run_job  # noqa: PLC0415

        for kinds in (("train",), ("index", "rebuild")):
            thread = threading.Thread(target=self._work, args=(kinds, run_job), name=f"jaxhash-{kinds[0]}-jobs", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self, kinds, run_job) -> None:
        while not self._stop.is_set():
            try:
                job = self.store.claim_next_job(kinds)
                if job is None:
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                if job["kind"] in ("index", "rebuild"):
                    with self._images_lock:
                        run_job(self, job)
                else:
                    run_job(self, job)
            except Exception:  # noqa: BLE001 - the database went away for a moment: the worker must not die
                import traceback  # noqa: PLC0415

                traceback.print_exc()
                self._stop.wait(2.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs and wait for the running ones' threads (training stops only at its end)."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        if any(thread.is_alive() for thread in self._threads):
            return  # a job still runs (training stops at its epoch's end): the folder stays this process's
        self.store.close()
        self._release_data_dir()

    def _release_data_dir(self) -> None:
        if self._data_dir_lock is not None:
            self._data_dir_lock.close()  # closing the file releases its flock
            self._data_dir_lock = None

    def wait_for_job(self, job_id: int, timeout: float = 300.0) -> dict:
        """Block until a job is done, failed or interrupted; returns its record."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.store.job(job_id)
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")

    # -- models ----------------------------------------------------------------------------
    def model_row(self, model_id: int) -> dict:
        row = self.store.model(model_id)
        if row is None:
            raise RequestError(f"there is no model {model_id}", 404)
        return row

    def hasher(self, model_id: int):
        """The loaded hasher of a ready model (cached)."""
        with self._cache_lock:
            if model_id in self._hashers:
                return self._hashers[model_id]
        row = self.model_row(model_id)
        if row["status"] != "ready":
            raise RequestError(f"model {model_id} is not ready ({row['status']})", 409)
        from ..hashers import load_hasher  # noqa: PLC0415

        try:
            hasher = load_hasher(self.data_dir / row["path"])
        except (FileNotFoundError, ValueError) as err:
            raise RequestError(f"the files of model {model_id} cannot be read ({err}): import the model again, or delete "
                               "it together with its indexes", 409) from None
        with self._cache_lock:
            self._hashers[model_id] = hasher
        return hasher

    def import_model(self, folder: str, name: str | None = None) -> int:
        """Copy a hasher saved by ``jaxhash fit`` / ``hasher.save`` (a folder inside an allowed root)."""
        from ..hashers import load_hasher  # noqa: PLC0415

        source = allowed_folder(folder, self.allow_roots)
        try:
            hasher = load_hasher(source)
        except (FileNotFoundError, ValueError, KeyError) as err:
            raise RequestError(f"{folder} holds no saved jaxhash model ({err})") from None
        if getattr(hasher, "input_shape_", None) is None:
            raise RequestError(f"the model in {folder} was fitted on feature vectors, so it cannot encode images: fit it on images")
        model_id = self.store.add_model(name or source.name, hasher.method, hasher.n_bits, "importing",
                                        summary={"imported_from": str(source), "input_shape": list(hasher.input_shape_)})
        target = self.data_dir / "models" / str(model_id)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        self.store.update_model(model_id, status="ready", path=f"models/{model_id}")
        return model_id

    def delete_model(self, model_id: int, with_indexes: bool = False) -> list[int]:
        """Delete a model; refused while an index uses it unless ``with_indexes`` (they go too)."""
        row = self.model_row(model_id)
        job = self.store.job(row["job_id"]) if row["job_id"] else None
        if row["status"] == "training" and job is not None and job["status"] in ("queued", "running"):
            raise RequestError(f"model {model_id} is being trained (job {row['job_id']}): wait for the job to end", 409)
        using = self.store.indexes_of_model(model_id)
        if using and not with_indexes:
            names = ", ".join(f"{i['id']} ({i['name']})" for i in using)
            raise RequestError(f"model {model_id} is used by index {names}: delete those first, or ask to delete the model "
                               "together with its indexes (with_indexes=true)", 409)
        with contextlib.ExitStack() as held:  # all or nothing: no index goes while another is still being changed
            for index in sorted(using, key=lambda i: i["id"]):
                held.enter_context(self.index_lock(index["id"]))
            for index in using:
                self._refuse_while_indexing(index["id"], f"delete model {model_id} with its indexes")
            for index in using:
                self.delete_index(index["id"])
            self.store.delete_model(model_id)
        with self._cache_lock:
            self._hashers.pop(model_id, None)
        self._forget()
        if row["path"]:
            shutil.rmtree(self.data_dir / row["path"], ignore_errors=True)
        if row["job_id"]:
            shutil.rmtree(self.data_dir / "jobs" / str(int(row["job_id"])), ignore_errors=True)  # its checkpoints
        return [i["id"] for i in using]

    # -- indexes ---------------------------------------------------------------------------
    def index_row(self, index_id: int) -> dict:
        row = self.store.index(index_id)
        if row is None:
            raise RequestError(f"there is no index {index_id}", 404)
        return row

    def create_index(self, name: str, model_id: int, partitioned: bool = False) -> int:
        hasher = self.hasher(model_id)
        if partitioned and not hasattr(hasher, "predict_proba"):
            raise RequestError(f"a partitioned index files images under the class the model predicts, and model {model_id} "
                               f"({hasher.method}) predicts no classes: use a cnn-softmax or cnn-hash model")
        index_id = self.store.add_index(name, model_id, "partitioned" if partitioned else "flat")
        self.write_index(index_id, self.empty_index(index_id), [], replace=True)
        return index_id

    def empty_index(self, index_id: int):
        """A new, empty index object for the index's model (features kept when the model has them)."""
        from ..index import HashIndex, ModelRef, PartitionedIndex  # noqa: PLC0415

        row = self.index_row(index_id)
        hasher = self.hasher(row["model_id"])
        probe = hasher.encode_details(np.zeros((1, *hasher.input_shape_), np.uint8))
        features = probe.get("features")
        kind = PartitionedIndex if row["kind"] == "partitioned" else HashIndex
        return kind(hasher.n_bits, model=ModelRef.of(hasher), feature_dim=None if features is None else features.shape[1],
                    metadata={"service_index": index_id, "name": row["name"]})

    def read_index_file(self, index_id: int):
        """A private copy of the index as stored (for a writer); a missing file is an empty index."""
        from ..index import read_index  # noqa: PLC0415

        path = self.data_dir / self.index_row(index_id)["path"]
        return read_index(path) if path.exists() else self.empty_index(index_id)

    def write_index(self, index_id: int, index, new_image_ids, replace: bool = False) -> None:
        """Write the index file atomically, then record its contents in the database."""
        from ..index import write_index  # noqa: PLC0415

        with self.index_lock(index_id):
            write_index(index, self.data_dir / self.index_row(index_id)["path"])
            self.store.set_index_contents(index_id, index.ids if replace else new_image_ids, index.ntotal, replace=replace)
        self._forget(index_id)

    def _refuse_while_indexing(self, index_id: int, what: str) -> None:
        busy = self.store.running_jobs_on_index(index_id)
        if busy:
            raise RequestError(f"index {index_id} is being changed by job {busy[0]}: {what} when it has finished", 409)

    def index_lock(self, index_id: int):
        """The lock every change of one index's file and entries holds (jobs, remove, clear, delete)."""
        with self._cache_lock:
            return self._index_locks.setdefault(int(index_id), threading.RLock())

    def clear_index(self, index_id: int) -> None:
        with self.index_lock(index_id):
            self._refuse_while_indexing(index_id, "clear it")
            self.write_index(index_id, self.empty_index(index_id), [], replace=True)

    def delete_index(self, index_id: int) -> None:
        row = self.index_row(index_id)
        with self.index_lock(index_id):
            self._refuse_while_indexing(index_id, "delete it")
            self.store.delete_index(index_id)
        self._forget(index_id)
        (self.data_dir / row["path"]).unlink(missing_ok=True)

    def remove_images(self, index_id: int, image_ids) -> int:
        from ..index import write_index  # noqa: PLC0415

        with self.index_lock(index_id):
            self._refuse_while_indexing(index_id, "remove images")
            index = self.read_index_file(index_id)
            removed = index.remove_ids(np.asarray(list(image_ids), np.int64))
            write_index(index, self.data_dir / self.index_row(index_id)["path"])
            self.store.remove_index_entries(index_id, image_ids, index.ntotal)
        self._forget(index_id)
        return int(removed)

    def index_disk_bytes(self, index_id: int) -> int:
        path = self.data_dir / self.index_row(index_id)["path"]
        return path.stat().st_size if path.exists() else 0

    def images_disk_bytes(self, index_id: int) -> int:
        """Bytes of the stored image files the index holds (shared images are counted in each)."""
        return self.store.index_image_bytes(index_id)

    # -- images ----------------------------------------------------------------------------
    def image_record(self, data: bytes, name: str, label: str | None, sha256: str, header=None) -> dict:
        """What :meth:`store_images` needs of one new image file (``header``: its checked
        :func:`_image_header`, read here when not given)."""
        width, height, ext = header or _image_header(data, self.limits)
        return {"sha256": sha256, "path": f"images/{sha256[:2]}/{sha256}{ext}", "name": name, "label": label, "width": width,
                "height": height, "bytes": len(data), "data": data}

    def store_images(self, records: list[dict]) -> dict[str, int]:
        """Write new image files (each renamed into place, then one sync for all), then record them
        in one transaction; returns ``{sha256: image id}``. A crash leaves no record without its file."""
        for r in records:
            target = self.data_dir / r["path"]
            if not target.exists() or target.stat().st_size != len(r["data"]):  # a crash can leave a file unsynced
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                tmp.write_bytes(r["data"])
                os.replace(tmp, target)
        if records:
            if hasattr(os, "sync"):
                os.sync()
            else:  # no sync(2): each file on its own
                for r in records:
                    with open(self.data_dir / r["path"], "rb+") as f:
                        os.fsync(f.fileno())
        return self.store.add_images([{k: v for k, v in r.items() if k != "data"} for r in records])

    def image_row(self, image_id: int) -> dict:
        row = self.store.image(image_id)
        if row is None:
            raise RequestError(f"there is no image {image_id}", 404)
        return row

    def image_bytes(self, image_id: int) -> bytes:
        return (self.data_dir / self.image_row(image_id)["path"]).read_bytes()

    def _thumbnail_path(self, sha256: str) -> Path:
        return self.data_dir / "thumbnails" / sha256[:2] / f"{sha256}.jpg"

    def thumbnail(self, image_id: int) -> bytes:
        """A JPEG at most ``THUMBNAIL_PIXELS`` on its longer side (made once, then kept)."""
        row = self.image_row(image_id)
        path = self._thumbnail_path(row["sha256"])
        if path.exists():
            return path.read_bytes()
        from PIL import Image  # noqa: PLC0415

        with Image.open(self.data_dir / row["path"]) as img:
            img = img.convert("RGB")
            img.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS), Image.BILINEAR)
            if max(img.size) < 96:  # tiny images (32x32 data sets) are enlarged to be seen
                scale = 96 / max(img.size)
                img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.NEAREST)
            out = io.BytesIO()
            img.save(out, "JPEG", quality=85)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, [out.getvalue()])
        return out.getvalue()

    def decode_for(self, hasher, data: bytes) -> np.ndarray:
        """Encoded bytes -> ``(H, W, C)`` uint8 at the model's input shape (limits checked)."""
        return self.decode_with_header(hasher, data)[0]

    def decode_with_header(self, hasher, data: bytes) -> tuple[np.ndarray, tuple[int, int, str]]:
        """:meth:`decode_for`, and the image's checked header ``(width, height, extension)``."""
        header = _image_header(data, self.limits)
        shape = hasher.input_shape_
        try:
            return decode_image(data, tuple(shape[:2]), int(shape[2])), header
        except (OSError, ValueError, SyntaxError):
            raise RequestError("the image is truncated or damaged and cannot be decoded", 415) from None

    # -- search ----------------------------------------------------------------------------
    def search(self, index_id: int, k: int = DEFAULT_K, data: bytes | None = None, image_id: int | None = None,
               rerank: int = 0, top_classes: int = 1) -> dict:
        """Search an index by example: uploaded bytes or a stored image id.

        Returns ``{"index", "model", "measure", "seconds", "results": [{"rank", "image_id",
        "distance", "hamming", "similarity", "name", "label", "width", "height"}]}`` where
        similarity = 1 / (1 + distance) (Hu & Feng), distance Hamming, or Euclidean on the model's
        features when ``rerank`` > 0 re-ranks a Hamming short-list of that many.
        """
        t0 = time.perf_counter()
        if not 1 <= int(k) <= 1000:
            raise RequestError(f"k must be between 1 and 1000, got {k}")
        if not 0 <= int(rerank) <= MAX_RERANK:
            raise RequestError(f"rerank must be between 0 (off) and {MAX_RERANK:,}, got {rerank}")
        if not 1 <= int(top_classes) <= 100:
            raise RequestError(f"top_classes must be between 1 and 100, got {top_classes}")
        row, hasher, index = self._search_context(int(index_id))
        if (data is None) == (image_id is None):
            raise RequestError("give exactly one query: an uploaded image file or an image id")
        if data is None:
            data = self.image_bytes(image_id)
        image = self.decode_for(hasher, data)
        use_rerank = int(rerank) > 0 and index.features is not None
        key = (int(index_id), id(index), int(k), int(rerank) if use_rerank else 0, max(1, int(top_classes)))
        dist, ids, hamming, predicted = self._batcher.submit(key, (hasher, index, image))
        keep = ids >= 0
        dist, ids, hamming = dist[keep], ids[keep], hamming[keep]
        # The query's own stored image comes first. An upload is looked up by its hash only where the nearest result is
        # at distance 0, as a stored copy would be: other searches ask the database nothing more.
        if image_id is not None:
            same = int(image_id)
        else:
            same = self._stored_image_id(data) if len(ids) and dist[0] == 0 else None
        if same is not None:
            dist, ids, hamming = self._own_image_first(index_id, int(k), same, dist, ids, hamming)
        info = self._image_rows(ids.tolist())
        results = []
        for rank, (d, i, h) in enumerate(zip(dist, ids, hamming), 1):
            image_row = info.get(int(i), {})
            distance = float(d)
            results.append({"rank": rank, "image_id": int(i), "distance": round(distance, 6), "hamming": int(h),
                            "similarity": round(1.0 / (1.0 + distance), 6), "name": image_row.get("name"),
                            "label": image_row.get("label"), "width": image_row.get("width"), "height": image_row.get("height")})
        answer = {"index": int(index_id), "model": int(row["model_id"]), "measure": "euclidean" if use_rerank else "hamming",
                  "ntotal": index.ntotal, "predicted_class": predicted, "predicted_label": self._class_name(row["model_id"], predicted),
                  "seconds": round(time.perf_counter() - t0, 6), "results": results}
        if int(rerank) > 0 and not use_rerank:
            answer["note"] = (f"not re-ranked: index {index_id} keeps no features (its model, {hasher.method}, has none), "
                              "so the results are in Hamming order")
        return answer

    def _stored_image_id(self, data: bytes) -> int | None:
        known = self.store.images_by_sha([hashlib.sha256(data).hexdigest()])
        return next((int(r["id"]) for r in known.values()), None)

    def _own_image_first(self, index_id: int, k: int, same: int, dist, ids, hamming):
        """Results with image ``same`` (the query's own bytes: its code and features, so distance 0) first among
        the images at its distance; put in where more than ``k`` images tie at 0 and pushed it out."""
        if same in ids:
            at = int(np.flatnonzero(ids == same)[0])
            first = int(np.flatnonzero(dist == dist[at])[0])
            order = np.r_[np.arange(first), at, np.delete(np.arange(first, len(ids)), at - first)]
            return dist[order], ids[order], hamming[order]
        if len(ids) == k and dist[-1] == 0 and self.store.index_holds(index_id, same):
            return np.r_[0, dist[:-1]], np.r_[same, ids[:-1]], np.r_[0, hamming[:-1]]
        return dist, ids, hamming

    def _class_name(self, model_id: int, predicted: int | None) -> str | None:
        """The name of class ``predicted`` of a model trained here (its training summary lists the classes; read once)."""
        if predicted is None:
            return None
        if model_id not in self._class_names:  # ids are never reused, and a trained model's classes never change
            model = self.store.model(model_id) or {}
            if model.get("status") != "ready":
                return None
            self._class_names[model_id] = model.get("summary", {}).get("classes")
        names = self._class_names[model_id]
        return str(names[predicted]) if isinstance(names, list) and 0 <= predicted < len(names) else None

    def _search_context(self, index_id: int) -> tuple[dict, object, object]:
        """``(index row, hasher, index)`` for a search: kept while the index file is unchanged, so
        that a search asks the database nothing but the names of its results."""
        from ..index import ModelMismatchError, read_index  # noqa: PLC0415

        with self._cache_lock:
            cached = self._contexts.get(index_id)
        if cached is not None:
            try:
                if _file_key(self.data_dir / cached[1]["path"]) == cached[0]:
                    return cached[1:]
            except FileNotFoundError:
                pass
        row = self.index_row(index_id)
        if row["model_id"] is None or self.store.model(row["model_id"]) is None:
            raise RequestError(f"the model of index {index_id} was deleted, so its codes can no longer be compared with "
                               "a query: delete the index and build a new one with another model", 409)
        hasher = self.hasher(row["model_id"])
        path = self.data_dir / row["path"]
        try:
            key = _file_key(path)  # before reading: a file replaced meanwhile is read again by the next search
        except FileNotFoundError:
            raise RequestError(f"the file of index {index_id} is missing: rebuild the index", 409) from None
        index = read_index(path)
        try:
            index.check_model(hasher)
        except ModelMismatchError as err:
            raise RequestError(str(err), 409) from None
        if index.ntotal:  # compile the page's default search now rather than in a user's first query
            self._search_batch((index_id, id(index), DEFAULT_K, 0, 1), [(hasher, index, np.zeros(hasher.input_shape_, np.uint8))])
        with self._cache_lock:
            self._contexts[index_id] = (key, row, hasher, index)
        return row, hasher, index

    def _image_rows(self, ids) -> dict[int, dict]:
        """Image records by id, from memory when seen before (an image's record never changes)."""
        with self._cache_lock:
            rows = {i: self._image_cache[i] for i in ids if i in self._image_cache}
        missing = [i for i in ids if i not in rows]
        if missing:
            fetched = self.store.images_by_id(missing)
            rows.update(fetched)
            with self._cache_lock:
                if len(self._image_cache) > 200_000:
                    self._image_cache.clear()
                self._image_cache.update(fetched)
        return rows

    def _forget(self, index_id: int | None = None) -> None:
        """Drop the cached search contexts (of one index, or all): the next search reads the file again."""
        with self._cache_lock:
            if index_id is None:
                self._contexts.clear()
            else:
                self._contexts.pop(index_id, None)

    @staticmethod
    def _search_batch(key, items) -> list:
        """One encode and one index scan for queries that arrived together (same index and options)."""
        from ..index import PartitionedIndex  # noqa: PLC0415

        _, _, k, rerank, top_classes = key
        hasher, index = items[0][0], items[0][1]
        images = np.stack([item[2] for item in items])
        padded = max(8, 1 << (len(items) - 1).bit_length())  # a few batch shapes, each compiled once
        if padded > len(items):
            images = np.concatenate([images, np.zeros((padded - len(items),) + images.shape[1:], images.dtype)])
        encoded = hasher.encode_details(images)
        options = {}
        if isinstance(index, PartitionedIndex):
            top = min(top_classes, encoded["probabilities"].shape[1])
            options["query_partitions"] = np.argsort(-encoded["probabilities"], axis=1, kind="stable")[:, :top]
        if rerank:
            dist, ids = index.search_rerank(encoded["codes"], encoded["features"], k, max(rerank, k), **options)
            hamming = np.stack([_hamming_to(index, code, row) for code, row in zip(encoded["codes"], ids)])
        else:
            dist, ids = index.search(encoded["codes"], k, **options)
            hamming = dist.astype(np.int64)
        probabilities = encoded.get("probabilities")
        predicted = [None] * len(items) if probabilities is None else np.argmax(probabilities, axis=1).tolist()
        return [(dist[i], ids[i], hamming[i], predicted[i]) for i in range(len(items))]

    # -- jobs ------------------------------------------------------------------------------
    def _job_source(self, folder: str | None, upload_dir: Path | None) -> tuple[dict, list[ImageFile], int]:
        """``(where the job reads, the image files there, how many links there lead outside the roots)``."""
        if upload_dir is not None:
            files, escaped = list_image_files(upload_dir, [upload_dir])
            return {"upload": str(upload_dir.relative_to(self.data_dir))}, files, escaped
        path = allowed_folder(folder, self.allow_roots)
        files, escaped = list_image_files(path, self.allow_roots)
        return {"folder": str(path)}, files, escaped

    def unpack_zip(self, zip_path: Path) -> Path:
        """Check and unpack an uploaded zip under ``uploads/``; returns the folder."""
        dest = self.data_dir / "uploads" / f"{int(time.time() * 1000)}-{os.getpid()}-{threading.get_ident() % 100000}"
        try:
            extract_zip(zip_path, dest, self.limits)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return dest

    def submit_index_job(self, index_id: int, folder: str | None = None, upload_dir: Path | None = None) -> int:
        """Queue encoding the images of a folder (or unpacked upload) into an index."""
        self.index_row(index_id)
        source, files, _ = self._job_source(folder, upload_dir)  # links out are skipped by the job, and logged
        if not files:
            raise RequestError("the folder holds no image files (.jpg, .png, ...)")
        job_id = self.store.add_job("index", {"index_id": int(index_id), **source})
        self.store.update_job(job_id, total=len(files))
        self._wake.set()
        return job_id

    def submit_rebuild_job(self, index_id: int) -> int:
        """Queue re-encoding every image the index holds, from the stored files, into a new file."""
        self.index_row(index_id)
        self._refuse_while_indexing(index_id, "rebuild it")
        job_id = self.store.add_job("rebuild", {"index_id": int(index_id)})
        self._wake.set()
        return job_id

    def submit_train_job(self, name: str, method: str = "cnn-hash", n_bits: int = 64, preset: str = "cpu",
                         epochs: int | None = None, folder: str | None = None, upload_dir: Path | None = None,
                         min_images_per_class: int | None = None, seed: int = 0) -> tuple[int, int]:
        """Queue training a model on a folder with one sub-folder per class; returns ``(job id, model id)``."""
        from ..hashers import make_hasher  # noqa: PLC0415

        if method not in TRAIN_METHODS:
            raise RequestError(f"method must be one of {', '.join(TRAIN_METHODS)}, got {method!r}")
        minimum = self.min_images_per_class if min_images_per_class is None else int(min_images_per_class)
        if minimum < 2:
            raise RequestError("min_images_per_class must be at least 2 (one image of each class is held out for validation)")
        try:
            make_hasher(method, n_bits=int(n_bits), preset=preset, epochs=epochs).config()
        except (ValueError, TypeError) as err:
            raise RequestError(f"cannot train {method} with these settings: {err}") from None
        source, files, escaped = self._job_source(folder, upload_dir)
        if escaped:
            raise RequestError("the folder holds links to images outside the allowed roots: remove them, or copy the images in", 403)
        counts = _checked_classes(files, minimum)
        if method == "cnn-softmax" and int(n_bits) < len(counts):
            raise RequestError(f"cnn-softmax needs at least one bit per class: {n_bits} bits < {len(counts)} classes")
        # the model first: a worker may claim the job as soon as it exists, and needs its model id
        model_id = self.store.add_model(name, method, int(n_bits), "training")
        params = {"name": name, "method": method, "n_bits": int(n_bits), "preset": preset, "epochs": epochs, "seed": int(seed),
                  "min_images_per_class": minimum, "classes": len(counts), "class_names": sorted(counts),
                  "images": len(files), "model_id": model_id, **source}
        job_id = self.store.add_job("train", params)
        self.store.update_model(model_id, job_id=job_id)
        self._wake.set()
        return job_id, model_id

    def cancel_job(self, job_id: int) -> str:
        """Cancel a queued job at once, or ask a running one to stop at its next chunk of images or epoch (what it
        did stays: images indexed so far, training checkpoints, which a resume continues from). Returns the status."""
        job = self.store.job(job_id)
        if job is None:
            raise RequestError(f"there is no job {job_id}", 404)
        if job["status"] == "queued" and self.store.cancel_queued_job(job_id):
            self.store.log_job(job_id, "cancelled before it started")
            self.store.set_status_of_trained_model(job, "cancelled")
            return "cancelled"
        job = self.store.job(job_id)
        if job["status"] in ("queued", "running"):  # claimed meanwhile: stopped as a running one
            self._cancelled.add(int(job_id))
            self.store.log_job(job_id, "cancel asked: stopping at the next chunk of images or epoch")
            return "cancelling"
        raise RequestError(f"job {job_id} is {job['status']}: only a queued or running job can be cancelled", 409)

    def cancel_asked(self, job_id: int) -> bool:
        return int(job_id) in self._cancelled

    def forget_cancel(self, job_id: int) -> None:
        self._cancelled.discard(int(job_id))

    def resume_job(self, job_id: int) -> None:
        """Queue an interrupted (or failed) job again; training goes on from its last checkpoint."""
        job = self.store.job(job_id)
        if job is None:
            raise RequestError(f"there is no job {job_id}", 404)
        if job["status"] not in ("interrupted", "failed", "cancelled"):
            raise RequestError(f"job {job_id} is {job['status']}; only an interrupted, failed or cancelled job can be resumed", 409)
        self.forget_cancel(job_id)
        if job["kind"] == "train":
            model = self.store.model(job["params"]["model_id"])
            if model is None or model["job_id"] != job_id:
                raise RequestError(f"the model of job {job_id} was deleted: start a new training", 409)
            self._check_training_folder_unchanged(job)
            self.store.update_model(model["id"], status="training")
        elif self.store.index(job["params"]["index_id"]) is None:
            raise RequestError(f"index {job['params']['index_id']} of job {job_id} was deleted: there is nothing to add to", 409)
        self.store.update_job(job_id, status="queued", message="queued again", finished=None,
                              params={**job["params"], "resume": True})
        self.store.log_job(job_id, "queued again to resume")
        self._wake.set()

    def _check_training_folder_unchanged(self, job: dict) -> None:
        """Refuse to resume a training whose folder no longer has the classes its checkpoints were trained on."""
        params = job["params"]
        upload = self.data_dir / params["upload"] if "upload" in params else None
        if upload is not None and not upload.is_dir():
            raise RequestError(f"the uploaded images of job {job['id']} are gone: start a new training", 409)
        _, files, _ = self._job_source(params.get("folder"), upload)
        try:
            counts = _checked_classes(files, int(params["min_images_per_class"]))
        except RequestError as err:
            raise RequestError(f"job {job['id']} cannot go on: its folder has changed, and {err}", 409) from None
        if len(counts) != int(params["classes"]):
            raise RequestError(f"job {job['id']} cannot go on: its folder now has {len(counts)} classes and the training began "
                               f"with {params['classes']}, so its checkpoints do not fit; start a new training", 409)
        before = params.get("class_names")  # jobs of an older jaxhash have only the count
        if before is not None and sorted(counts) != list(before):
            changed = sorted(set(before) ^ set(counts))[:5]
            raise RequestError(f"job {job['id']} cannot go on: the classes of its folder have changed ({', '.join(changed)}), so "
                               "its checkpoints would give their outputs other meanings; start a new training", 409)

    def job_record(self, job_id: int) -> dict:
        job = self.store.job(job_id)
        if job is None:
            raise RequestError(f"there is no job {job_id}", 404)
        if job["kind"] == "train":
            job["curve"] = self.store.curve_points(job_id)
        return job

    def disk_use(self) -> dict:
        """Bytes under the data folder, by part, and what :meth:`free_space` would remove."""
        images = self.store.image_totals()  # from the records: images can be many files
        parts = {"images": images["bytes"], **{sub: _folder_bytes(self.data_dir / sub)
                                               for sub in ("thumbnails", "models", "indexes", "jobs", "uploads")}}
        parts["database"] = sum(p.stat().st_size for p in self.data_dir.glob("jaxhash.sqlite*") if p.is_file())
        return {"bytes": parts, "total_bytes": sum(parts.values()), "unused_images": images["unused"],
                "unused_image_bytes": images["unused_bytes"],
                "spare_checkpoint_bytes": sum(_folder_bytes(p) for p in self._spare_job_folders())}

    def _spare_job_folders(self) -> list[Path]:
        """Checkpoint folders no job can resume from: their training is done, or its job or model is gone."""
        spare = []
        for folder in sorted((self.data_dir / "jobs").iterdir()):
            job = self.store.job(int(folder.name)) if folder.name.isdigit() else None
            model = self.store.model(job["params"].get("model_id", -1)) if job else None
            if job is None or job["status"] == "done" or model is None or model["job_id"] != job["id"]:
                spare.append(folder)
        return spare

    def free_space(self) -> dict:
        """Remove the files of images no index holds (and their thumbnails) and checkpoints no job can resume
        from. Refused while an index job runs: it stores images before its index holds them."""
        if not self._images_lock.acquire(blocking=False):
            raise RequestError("an index job is running: free space when it has finished", 409)
        try:
            self._entries_from_index_files()
            unused = self.store.unused_images()
            self.store.delete_images([r["id"] for r in unused])
            freed = 0
            for row in unused:
                for path in (self.data_dir / row["path"], self._thumbnail_path(row["sha256"])):
                    if path.exists():
                        freed += path.stat().st_size
                        path.unlink()
            with self._cache_lock:
                self._image_cache.clear()
        finally:
            self._images_lock.release()
        folders = self._spare_job_folders()
        checkpoint_bytes = sum(_folder_bytes(p) for p in folders)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        return {"images_removed": len(unused), "checkpoints_removed": len(folders), "bytes_freed": freed + checkpoint_bytes}

    def _entries_from_index_files(self) -> None:
        """Record what every index file holds (the file is the truth: a stop between writing it and recording its
        entries leaves them behind), so that no image an index holds counts as unused."""
        from ..index import IndexFormatError  # noqa: PLC0415

        for row in self.store.list_indexes():
            with self.index_lock(row["id"]):
                try:
                    index = self.read_index_file(row["id"])
                except (IndexFormatError, OSError, ValueError) as err:
                    raise RequestError(f"the file of index {row['id']} ({row['name']}) cannot be read ({err}): rebuild or "
                                       "delete that index before freeing space", 409) from None
                self.store.set_index_contents(row["id"], index.ids, index.ntotal, replace=True)

    def health(self) -> dict:
        usage = shutil.disk_usage(self.data_dir)
        statuses = [j["status"] for j in self.store.list_jobs(1000)]
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1), "database": self.store.engine.dialect.name,
                "journal_mode": self.store.journal_mode(), "data_dir": str(self.data_dir),
                "workers_alive": sum(t.is_alive() for t in self._threads), "disk_free_bytes": usage.free,
                "jobs": {s: statuses.count(s) for s in ("queued", "running", "interrupted")}}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _checked_classes(files, minimum: int) -> dict[str, int]:
    """Images per class of a training folder, refused with the fix when there are fewer than two classes or a
    class has fewer than ``minimum`` images (a class is the folder that holds its images, however deep)."""
    counts = class_counts(files)
    if len(counts) < 2:
        raise RequestError(f"training needs at least two classes, one sub-folder each; found {len(counts)} "
                           f"({', '.join(counts) or 'no sub-folders with images'})")
    small = {c: n for c, n in counts.items() if n < minimum}
    if small:
        parents = {f.label: f.path.parent for f in files if f.label is not None}
        root = Path(os.path.commonpath([str(p.parent) for p in parents.values()]))
        where = {c: p.relative_to(root).as_posix() for c, p in parents.items()}  # a nested class is named by its path
        shown = ", ".join(f"{c} ({n})" if where[c] == c else f"{c} ({n}, in {where[c]})" for c, n in sorted(small.items())[:5])
        lower = " or lower the minimum per class (at least 2)," if min(small.values()) >= 2 else ""
        raise RequestError(f"{len(small)} of {len(counts)} classes have fewer than {minimum} images: {shown}. A class is the "
                           f"folder that holds its images: add images,{lower} or move these into a class folder or away")
    return counts


def _file_key(path: Path) -> tuple:
    """What changes when a file is replaced (an atomic write renames a new inode over it)."""
    stat = path.stat()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _hamming_to(index, query_code: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Hamming distances from one packed query code to the entries ``ids`` of ``index`` (-1 for a missing id)."""
    out = np.full(len(ids), -1, np.int64)
    valid = ids >= 0
    if not valid.any():
        return out
    order = np.argsort(index.ids, kind="stable")
    positions = order[np.searchsorted(index.ids, ids[valid], sorter=order)]
    xor = np.bitwise_xor(index.codes[positions], query_code[None, :]).view(np.uint8)
    out[valid] = np.unpackbits(xor, axis=1).sum(axis=1)
    return out
