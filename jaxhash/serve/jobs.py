"""The service's background jobs: index a folder, rebuild an index, train a model.

Each runs in one of the service's worker threads (:meth:`Service.start_workers`): one thread
trains, one indexes, so searches and indexing go on while a model trains. A job writes its
progress (done / total, rate, message) and its log to the database as it goes; an index job
writes its index file at least every ``_SAVE_EVERY_SECONDS`` and a training job an Orbax
checkpoint every epoch, so a killed server loses little, and the job, marked interrupted at the
next start, resumes where it stood.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointMismatchError
from .files import RequestError, list_image_files
from .service import _SAVE_EVERY_SECONDS, Service

__all__ = ["run_job", "ENCODE_CHUNK"]

ENCODE_CHUNK = 128  # images decoded and encoded at a time by an index job
READ_THREADS = 4


class JobCancelled(Exception):
    """A running job stopped because it was asked to; its message says what it kept."""


def run_job(service: Service, job: dict) -> None:
    """Run one claimed job to its end, recording done or failed (never raises)."""
    store = service.store
    runner = {"index": _index_job, "rebuild": _rebuild_job, "train": _train_job}[job["kind"]]
    store.log_job(job["id"], f"started ({job['kind']})" + (" to resume" if job["params"].get("resume") else ""))
    t0 = time.time()
    try:
        result = runner(service, job)
    except JobCancelled as err:
        message = str(err) or "cancelled"
        store.log_job(job["id"], message)
        store.update_job(job["id"], status="cancelled", message=message, finished=time.time())
        service.forget_cancel(job["id"])
        store.set_status_of_trained_model(job, "cancelled")
        return
    except Exception as err:  # noqa: BLE001 - a job's failure is recorded, the worker goes on
        expected = isinstance(err, (RequestError, FileNotFoundError, CheckpointMismatchError))  # its message says it all
        message = str(err) if expected else f"{type(err).__name__}: {err}"
        if isinstance(err, CheckpointMismatchError) and job["kind"] == "train":  # in the page's words, not the library's
            message = ("the images of its folder changed since this training began, so its checkpoints no longer fit: put "
                       "the folder back as it was to resume, or start a new training")
        store.log_job(job["id"], "failed: " + message + ("" if expected else "\n" + traceback.format_exc(limit=8)))
        store.update_job(job["id"], status="failed", message=message[:2000], finished=time.time())
        store.set_status_of_trained_model(job, "failed")
        return
    service.forget_cancel(job["id"])  # asked too late: the job had finished
    store.update_job(job["id"], status="done", result=result, finished=time.time(),
                     message=result.get("message", "done"))
    if job["kind"] == "train":  # the model is saved: its checkpoints will never be resumed from
        shutil.rmtree(service.data_dir / "jobs" / str(job["id"]), ignore_errors=True)
    store.log_job(job["id"], f"done in {time.time() - t0:.1f} s: {result.get('message', '')}")


class _Progress:
    """Writes a job's done / total / rate to the database at most every ``every`` seconds."""

    def __init__(self, store, job_id: int, total: int, every: float = 0.25):
        self.store, self.job_id, self.total, self.every = store, job_id, total, every
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, message: str, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last >= self.every:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            self.store.update_job(self.job_id, done=int(done), total=int(self.total), rate=round(rate, 2), message=message)


def _encode_into(service: Service, job: dict, index_id: int, files: list, index, present: set, on_progress,
                 publish: bool = True) -> dict:
    """Store, decode and encode ``files`` (ImageFile or (path, label, image id)) into ``index``,
    skipping images it holds already; writes the index file as it goes. Returns the counts.

    Each chunk is one database query for the known hashes, one transaction for the new images
    and one disk sync for their files, so a folder is indexed at the speed of decoding and the
    network, not of per-file round trips."""
    hasher = service.hasher(service.index_row(index_id)["model_id"])
    pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="jaxhash-read")  # file reads and decoding release the GIL
    try:
        return _encode_chunks(service, job, index_id, files, index, present, on_progress, hasher, pool, publish)
    finally:
        pool.shutdown()


def _shown(path: Path, label: str | None) -> str:
    """A file as a log line names it: with its class folder, as the user laid it out."""
    return f"{label}/{path.name}" if label else path.name


def _read_file(item, limit: int):
    """``(bytes, sha256)`` of a file within the byte limit, or the error."""
    path = Path(item[0])
    try:
        size = path.stat().st_size
        if size > limit:
            raise RequestError(f"{size:,} bytes, more than the limit of {limit:,}")
        data = path.read_bytes()
    except (RequestError, OSError) as err:
        return err
    return data, hashlib.sha256(data).hexdigest()


def _decode(service: Service, hasher, wanted):
    """``(image at the model's shape, new-image record)`` of one file, or the RequestError."""
    path, label, image_id, data, sha = wanted
    try:
        image, header = service.decode_with_header(hasher, data)
        return image, (None if image_id is not None else service.image_record(data, path.name, label, sha, header))
    except RequestError as err:
        return err


def _encode_chunks(service: Service, job: dict, index_id: int, files: list, index, present: set, on_progress, hasher, pool,
                   publish: bool):
    partitioned = hasattr(index, "partitions")
    added, duplicates, skipped = [], 0, 0
    last_save = time.perf_counter()
    unsaved: list[int] = []
    for start in range(0, len(files), ENCODE_CHUNK):
        read = []  # (path, label, image id or None, bytes, sha256)
        chunk = files[start : start + ENCODE_CHUNK]
        for item, loaded in zip(chunk, pool.map(lambda it: _read_file(it, service.limits.upload_bytes), chunk)):
            if isinstance(loaded, Exception):
                skipped += 1
                service.store.log_job(job["id"], f"skipped {_shown(Path(item[0]), item[1])}: {loaded}")
                continue
            read.append((Path(item[0]), item[1], item[2] if len(item) > 2 else None, *loaded))
        known = service.store.images_by_sha([r[4] for r in read if r[2] is None])
        wanted, seen = [], set()
        for path, label, image_id, data, sha in read:
            if image_id is None and sha in known:
                image_id = int(known[sha]["id"])
            if (image_id is not None and image_id in present) or sha in seen:
                duplicates += 1  # already in the index, or the same file twice in this folder
                continue
            seen.add(sha)
            wanted.append((path, label, image_id, data, sha))
        images, chosen, new_files = [], [], []  # chosen: (sha256, image id or None)
        for (path, label, image_id, data, sha), decoded in zip(wanted, pool.map(lambda w: _decode(service, hasher, w), wanted)):
            if isinstance(decoded, RequestError):
                skipped += 1
                service.store.log_job(job["id"], f"skipped {_shown(path, label)}: {decoded}")
                continue
            image, record = decoded
            if image_id is None:
                new_files.append(record)
            images.append(image)
            chosen.append((sha, image_id))
        ids_of = service.store_images(new_files)
        ids = [image_id if image_id is not None else ids_of[sha] for sha, image_id in chosen]
        present.update(ids)
        if images:
            encoded = hasher.encode_details(np.stack(images))
            extra = {"features": encoded["features"]} if index.features is not None else {}
            if partitioned:
                extra["partitions"] = np.argmax(encoded["probabilities"], axis=1)
            index.add_with_ids(encoded["codes"], np.asarray(ids, np.int64), **extra)
            added.extend(ids)
            unsaved.extend(ids)
        done = min(start + ENCODE_CHUNK, len(files))
        on_progress(done, f"{done} of {len(files)} images: {len(added)} added, {duplicates} already indexed, {skipped} skipped")
        if publish and unsaved and time.perf_counter() - last_save > _SAVE_EVERY_SECONDS:
            service.write_index(index_id, index, unsaved)
            unsaved, last_save = [], time.perf_counter()
        if service.cancel_asked(job["id"]) and done < len(files):
            if not publish:
                raise JobCancelled(f"cancelled after {done} of {len(files)} images: the index is as it was before")
            service.write_index(index_id, index, unsaved)
            raise JobCancelled(f"cancelled after {done} of {len(files)} images: the {len(added)} added stay in the index "
                               f"(it holds {index.ntotal}); running it again adds the rest")
    if publish:
        service.write_index(index_id, index, unsaved)
    return {"added": len(added), "duplicates": duplicates, "skipped": skipped, "ntotal": index.ntotal}


def _index_job(service: Service, job: dict) -> dict:
    params = job["params"]
    index_id = int(params["index_id"])
    if "upload" in params:
        folder = service.data_dir / params["upload"]
        files, escaped = list_image_files(folder, [folder])
    else:
        files, escaped = list_image_files(Path(params["folder"]), service.allow_roots)
    if escaped:
        service.store.log_job(job["id"], f"skipped {escaped} files whose links lead outside the allowed roots")
    progress = _Progress(service.store, job["id"], len(files))
    index = service.read_index_file(index_id)
    # The file is the truth: a job killed between writing it and recording its entries left them unrecorded.
    service.store.set_index_contents(index_id, index.ids, index.ntotal, replace=True)
    counts = _encode_into(service, job, index_id, files, index, set(index.ids.tolist()), progress)
    message = (f"{counts['added']} images added, {counts['duplicates']} already indexed, {counts['skipped']} skipped; "
               f"the index holds {counts['ntotal']}")
    progress(len(files), message, force=True)
    if "upload" in params:
        shutil.rmtree(service.data_dir / params["upload"], ignore_errors=True)
    return {**counts, "escaped": escaped, "message": message}


def _rebuild_job(service: Service, job: dict) -> dict:
    index_id = int(job["params"]["index_id"])
    ids = service.store.index_image_ids(index_id)
    rows = service.store.images_by_id(ids)
    files = [(service.data_dir / rows[i]["path"], rows[i]["label"], i) for i in ids if i in rows]
    progress = _Progress(service.store, job["id"], len(files))
    index = service.empty_index(index_id)
    counts = _encode_into(service, job, index_id, files, index, set(), progress, publish=False)  # searches keep the old one
    service.write_index(index_id, index, index.ids, replace=True)
    message = f"rebuilt from {len(files)} stored images: the index holds {index.ntotal}"
    progress(len(files), message, force=True)
    return {**counts, "message": message}


def _train_job(service: Service, job: dict) -> dict:
    from ..data.folders import load_image_folder  # noqa: PLC0415
    from ..hashers import make_hasher  # noqa: PLC0415
    from ..train import EpochEnd, StopTraining  # noqa: PLC0415

    class TrainingCancelled(JobCancelled, StopTraining):
        """Ends the training after this epoch's checkpoint (StopTraining), and the job as cancelled."""


    store, params, job_id = service.store, job["params"], job["id"]
    model_id = int(params["model_id"])
    folder = service.data_dir / params["upload"] if "upload" in params else Path(params["folder"])
    hasher = make_hasher(params["method"], n_bits=params["n_bits"], seed=params.get("seed", 0), preset=params["preset"],
                         epochs=params.get("epochs"), min_images_per_class=params["min_images_per_class"],
                         checkpoint_dir=service.data_dir / "jobs" / str(job_id) / "checkpoints", resume=True, progress=False)
    size = hasher.input_size()
    store.update_job(job_id, message=f"reading {params['images']} images of {params['classes']} classes")
    sets = load_image_folder(folder, image_size=size, channels=3, progress=False)
    loaded = {p for s in sets.values() for p in s.paths}
    listed, _ = list_image_files(folder, [folder])
    unread = [_shown(f.path, f.label) for f in listed if f.path.relative_to(folder.resolve()).as_posix() not in loaded]
    if unread:
        store.log_job(job_id, f"skipped {len(unread)} file{'s' if len(unread) != 1 else ''} that cannot be read as images: "
                              + ", ".join(unread[:20]) + (f", ... ({len(unread) - 20} more)" if len(unread) > 20 else ""))
    names = sorted({c for s in sets.values() for c in s.class_names})
    position = {name: i for i, name in enumerate(names)}  # one numbering over all splits (train/, test/, ...)
    images = np.concatenate([s.images for s in sets.values()])
    labels = np.concatenate([np.asarray([position[s.class_names[i]] if i >= 0 else -1 for i in s.labels], np.int64)
                             for s in sets.values()])
    t0 = time.time()

    def on_epoch(end: EpochEnd) -> None:
        store.add_curve_point(job_id, end.stage, end.epoch + 1, end.seconds, end.metrics)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in end.metrics.items() if k in ("loss", "accuracy", "val_accuracy"))
        store.update_job(job_id, done=end.epoch + 1, total=end.epochs, rate=round(end.metrics.get("images_per_s", 0.0), 1),
                         message=f"{end.stage}: epoch {end.epoch + 1} of {end.epochs}; {shown}")
        store.log_job(job_id, f"{end.stage} epoch {end.epoch + 1}/{end.epochs}: {shown} ({end.seconds:.1f} s)")
        if service.cancel_asked(job_id) and end.epoch + 1 < end.epochs:  # recorded above; its checkpoint is still saved
            raise TrainingCancelled(f"cancelled after {end.stage} epoch {end.epoch + 1} of {end.epochs}: resuming continues "
                                    "from its checkpoint")

    hasher.on_epoch = (on_epoch,)
    hasher.fit(images, labels)
    target = service.data_dir / "models" / str(model_id)
    shutil.rmtree(target, ignore_errors=True)
    hasher.save(target)
    config = json.loads(hasher.config_)
    summary = {"trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(time.time() - t0, 1),
               "iterations": int(hasher.train_steps_), "epochs": config["epochs"], "batch_size": config["batch_size"],
               "validation_accuracy": hasher.validation_accuracy_, "images": len(images), "classes": names,
               "input_shape": list(hasher.input_shape_), "job_id": job_id}
    store.update_model(model_id, status="ready", path=f"models/{model_id}", summary=summary)
    if "upload" in params:
        shutil.rmtree(folder, ignore_errors=True)
    accuracy = "n/a" if hasher.validation_accuracy_ is None else f"{hasher.validation_accuracy_:.3f}"
    message = (f"trained {params['method']} on {len(images)} images of {len(names)} classes in {summary['seconds']:.0f} s, "
               f"{summary['iterations']} iterations; validation accuracy {accuracy}")
    return {"model_id": model_id, **summary, "message": message}
