"""What the search service remembers, in one SQL database through SQLAlchemy Core.

SQLite (in WAL mode, so that searches read while a job writes) by default, or any database URL
SQLAlchemy knows, e.g. ``postgresql+psycopg://user@host/db`` for several users. Files (images,
saved models, index files) live under the data folder; the database holds what they are:

- ``images``: one row per distinct file (by SHA-256), stored as ``images/ab/<sha256>.<ext>``.
- ``models``: saved hashers under ``models/<id>/``, with the summary of their training.
- ``indexes``: ``.jhx`` files under ``indexes/``, each built by one model.
- ``index_entries``: which images an index holds (written after its file, so a rebuild can
  re-encode them; the file is the truth for searching).
- ``jobs``: index and training jobs, queued, running, done, failed, interrupted or cancelled, with
  progress and a log.
- ``curve_points``: the training curve of each training job (one row per epoch).

Times are Unix seconds (float). JSON fields are stored as text.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

__all__ = ["Store", "JOB_STATES"]

JOB_STATES = ("queued", "running", "done", "failed", "interrupted", "cancelled")


def _tables():
    import sqlalchemy as sa  # noqa: PLC0415 - the serve extra

    meta = sa.MetaData()
    images = sa.Table(
        "images", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.String(300), nullable=False),  # relative to the data folder
        sa.Column("name", sa.String(300), nullable=False),  # shown only, never used as a path
        sa.Column("label", sa.String(200)),  # the class folder it came from, if any
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sqlite_autoincrement=True,  # ids are never reused: an old job or link cannot reach a newer record
    )
    models = sa.Table(
        "models", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("method", sa.String(60), nullable=False),
        sa.Column("n_bits", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),  # training, ready, failed
        sa.Column("path", sa.String(300)),
        sa.Column("summary", sa.Text, nullable=False, default="{}"),
        sa.Column("job_id", sa.Integer),
        sa.Column("created", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    indexes = sa.Table(
        "indexes", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),  # flat or partitioned
        sa.Column("path", sa.String(300), nullable=False),
        sa.Column("ntotal", sa.Integer, nullable=False, default=0),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    entries = sa.Table(
        "index_entries", meta,
        sa.Column("index_id", sa.Integer, sa.ForeignKey("indexes.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), primary_key=True),
    )
    jobs = sa.Table(
        "jobs", meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(20), nullable=False),  # index, rebuild, train
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("done", sa.Integer, nullable=False, default=0),
        sa.Column("total", sa.Integer, nullable=False, default=0),
        sa.Column("rate", sa.Float, nullable=False, default=0.0),
        sa.Column("message", sa.Text, nullable=False, default=""),
        sa.Column("result", sa.Text, nullable=False, default="{}"),
        sa.Column("log", sa.Text, nullable=False, default=""),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float),
        sa.Column("finished", sa.Float),
        sqlite_autoincrement=True,
    )
    curve = sa.Table(
        "curve_points", meta,
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("stage", sa.String(40), primary_key=True),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("loss", sa.Float),
        sa.Column("accuracy", sa.Float),
        sa.Column("val_accuracy", sa.Float),
        sa.Column("images_per_s", sa.Float),
    )
    return meta, images, models, indexes, entries, jobs, curve


def _has_module(name: str) -> bool:
    from importlib.util import find_spec  # noqa: PLC0415

    return find_spec(name) is not None


def _row(row, json_fields=()) -> dict | None:
    if row is None:
        return None
    record = dict(row._mapping)
    for name in json_fields:
        record[name] = json.loads(record[name] or "{}")
    return record


def _without_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages (SQLAlchemy's own parsing where it can)."""
    import re  # noqa: PLC0415

    import sqlalchemy as sa  # noqa: PLC0415

    url = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: hide what looks like user:password@
        pass
    head, sep, tail = url.partition("://")
    if "@" not in tail.split("/", 1)[0]:
        return url
    credentials, host = tail.split("/", 1)[0].rsplit("@", 1), tail[len(tail.split("/", 1)[0]):]
    user = credentials[0].split(":", 1)[0]
    return f"{head}{sep}{user}:***@{credentials[1]}{host}" if ":" in credentials[0] else url


class Store:
    """The service's database. Thread-safe: every method takes a connection of its own.

    Args:
      url: a SQLAlchemy database URL; ``sqlite:///PATH`` gets WAL mode, foreign keys and a busy
        timeout so that the job threads and the web requests share it.
    """

    def __init__(self, url: str):
        import sqlalchemy as sa  # noqa: PLC0415

        self.sa = sa
        shown = _without_password(url)  # as the user gave it, for messages
        if url.startswith(("postgresql://", "postgres://")) and _has_module("psycopg") and not _has_module("psycopg2"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]  # the driver of the postgres extra
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        options = {"connect_args": {"check_same_thread": False, "timeout": 30}} if self.is_sqlite else {"pool_pre_ping": True}
        try:
            self.engine = sa.create_engine(url, **options)
        except sa.exc.ArgumentError:
            raise ValueError(f"--database-url {shown!r} is not a database URL: give one such as "
                             "postgresql://USER@HOST/DATABASE or sqlite:////path/to/file.sqlite") from None
        except ImportError as err:  # the URL names a driver that is not installed
            raise ImportError(f"--database-url {shown!r} needs a driver that is not installed ({err}): "
                              "for PostgreSQL, pip install 'jaxhash[postgres]'") from None
        if self.is_sqlite:
            @sa.event.listens_for(self.engine, "connect")
            def _sqlite_settings(dbapi_connection, _record):
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        (self.meta, self.images, self.models, self.indexes, self.entries, self.jobs, self.curve) = _tables()
        try:
            self.meta.create_all(self.engine)
        except sa.exc.OperationalError as err:
            reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
            raise ConnectionError(f"cannot open the database {shown}: {reason}") from None

    @classmethod
    def in_folder(cls, data_dir) -> "Store":
        """The SQLite database ``DATA_DIR/jaxhash.sqlite``."""
        return cls(f"sqlite:///{Path(data_dir) / 'jaxhash.sqlite'}")

    def journal_mode(self) -> str | None:
        """SQLite's journal mode (``wal``), or None for another database."""
        if not self.is_sqlite:
            return None
        with self.engine.connect() as c:
            return c.exec_driver_sql("PRAGMA journal_mode").scalar()

    def close(self) -> None:
        self.engine.dispose()

    # -- images ----------------------------------------------------------------------------
    def images_by_sha(self, hashes) -> dict[str, dict]:
        """Known images among ``hashes`` (SHA-256 hex), by hash: one query for a batch."""
        hashes = list(dict.fromkeys(hashes))
        if not hashes:
            return {}
        with self.engine.connect() as c:
            rows = c.execute(self.images.select().where(self.images.c.sha256.in_(hashes))).all()
        return {r.sha256: _row(r) for r in rows}

    def add_images(self, records: list[dict]) -> dict[str, int]:
        """Insert new images (dicts of the ``images`` columns but id and created) in one
        transaction; returns ``{sha256: id}`` for all of them, also those another writer added first."""
        if not records:
            return {}
        sa = self.sa
        now = time.time()
        with self.engine.begin() as c:
            known = set(c.execute(sa.select(self.images.c.sha256)
                                  .where(self.images.c.sha256.in_([r["sha256"] for r in records]))).scalars())
            new = [{**r, "name": r["name"][:300], "created": now} for r in records if r["sha256"] not in known]
            if new:
                c.execute(self.images.insert(), new)
            rows = c.execute(sa.select(self.images.c.sha256, self.images.c.id)
                             .where(self.images.c.sha256.in_([r["sha256"] for r in records]))).all()
        return {sha: int(i) for sha, i in rows}

    def image(self, image_id: int) -> dict | None:
        with self.engine.connect() as c:
            return _row(c.execute(self.images.select().where(self.images.c.id == int(image_id))).first())

    def images_by_id(self, ids) -> dict[int, dict]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        with self.engine.connect() as c:
            rows = c.execute(self.images.select().where(self.images.c.id.in_(ids))).all()
        return {int(r.id): _row(r) for r in rows}

    # -- models ----------------------------------------------------------------------------
    def add_model(self, name: str, method: str, n_bits: int, status: str, path: str | None = None, summary: dict | None = None,
                  job_id: int | None = None) -> int:
        with self.engine.begin() as c:
            result = c.execute(self.models.insert().values(name=name, method=method, n_bits=int(n_bits), status=status, path=path,
                                                           summary=json.dumps(summary or {}), job_id=job_id,
                                                           created=time.time()))
            return int(result.inserted_primary_key[0])

    def update_model(self, model_id: int, **values) -> None:
        if "summary" in values:
            values["summary"] = json.dumps(values["summary"])
        with self.engine.begin() as c:
            c.execute(self.models.update().where(self.models.c.id == int(model_id)).values(**values))

    def model(self, model_id: int) -> dict | None:
        with self.engine.connect() as c:
            return _row(c.execute(self.models.select().where(self.models.c.id == int(model_id))).first(), ("summary",))

    def list_models(self) -> list[dict]:
        with self.engine.connect() as c:
            return [_row(r, ("summary",)) for r in c.execute(self.models.select().order_by(self.models.c.id)).all()]

    def delete_model(self, model_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(self.models.delete().where(self.models.c.id == int(model_id)))

    # -- indexes ---------------------------------------------------------------------------
    def add_index(self, name: str, model_id: int, kind: str) -> int:
        """A new index row; its file is ``indexes/<id>.jhx``."""
        now = time.time()
        with self.engine.begin() as c:
            result = c.execute(self.indexes.insert().values(name=name, model_id=int(model_id), kind=kind, path="", ntotal=0,
                                                            created=now, updated=now))
            index_id = int(result.inserted_primary_key[0])
            c.execute(self.indexes.update().where(self.indexes.c.id == index_id).values(path=f"indexes/{index_id}.jhx"))
            return index_id

    def index(self, index_id: int) -> dict | None:
        with self.engine.connect() as c:
            return _row(c.execute(self.indexes.select().where(self.indexes.c.id == int(index_id))).first())

    def list_indexes(self) -> list[dict]:
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(self.indexes.select().order_by(self.indexes.c.id)).all()]

    def indexes_of_model(self, model_id: int) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(self.indexes.select().where(self.indexes.c.model_id == int(model_id))).all()
        return [_row(r) for r in rows]

    def set_index_contents(self, index_id: int, image_ids, ntotal: int, replace: bool = False) -> None:
        """Record ``image_ids`` as held by the index (all of them with ``replace``) and its size."""
        sa = self.sa
        image_ids = sorted({int(i) for i in image_ids})
        with self.engine.begin() as c:
            if replace:
                c.execute(self.entries.delete().where(self.entries.c.index_id == int(index_id)))
                known = set()
            else:
                known = set(c.execute(sa.select(self.entries.c.image_id).where(self.entries.c.index_id == int(index_id))).scalars())
            new = [{"index_id": int(index_id), "image_id": i} for i in image_ids if i not in known]
            if new:
                c.execute(self.entries.insert(), new)
            c.execute(self.indexes.update().where(self.indexes.c.id == int(index_id)).values(ntotal=int(ntotal), updated=time.time()))

    def remove_index_entries(self, index_id: int, image_ids, ntotal: int) -> None:
        with self.engine.begin() as c:
            c.execute(self.entries.delete().where(self.entries.c.index_id == int(index_id))
                      .where(self.entries.c.image_id.in_([int(i) for i in image_ids])))
            c.execute(self.indexes.update().where(self.indexes.c.id == int(index_id)).values(ntotal=int(ntotal), updated=time.time()))

    def index_holds(self, index_id: int, image_id: int) -> bool:
        entries = self.entries
        with self.engine.connect() as c:
            return c.execute(self.sa.select(entries.c.image_id).where(entries.c.index_id == int(index_id))
                             .where(entries.c.image_id == int(image_id))).first() is not None

    def index_image_ids(self, index_id: int) -> list[int]:
        sa = self.sa
        with self.engine.connect() as c:
            return [int(i) for i in c.execute(sa.select(self.entries.c.image_id).where(self.entries.c.index_id == int(index_id))
                                              .order_by(self.entries.c.image_id)).scalars()]

    def index_image_bytes(self, index_id: int) -> int:
        """Bytes of the image files an index holds (counted in the database)."""
        sa = self.sa
        query = (sa.select(sa.func.coalesce(sa.func.sum(self.images.c.bytes), 0))
                 .select_from(self.entries.join(self.images, self.entries.c.image_id == self.images.c.id))
                 .where(self.entries.c.index_id == int(index_id)))
        with self.engine.connect() as c:
            return int(c.execute(query).scalar())

    def index_images(self, index_id: int, offset: int, limit: int) -> tuple[int, list[dict]]:
        """``(how many images the index holds, the records of a page of them by id)``."""
        sa = self.sa
        held = self.entries.c.index_id == int(index_id)
        with self.engine.connect() as c:
            total = int(c.execute(sa.select(sa.func.count()).select_from(self.entries).where(held)).scalar())
            rows = c.execute(self.images.select().join(self.entries, self.entries.c.image_id == self.images.c.id).where(held)
                             .order_by(self.images.c.id).offset(int(offset)).limit(int(limit))).all()
        return total, [_row(r) for r in rows]

    def delete_index(self, index_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(self.entries.delete().where(self.entries.c.index_id == int(index_id)))
            c.execute(self.indexes.delete().where(self.indexes.c.id == int(index_id)))

    def _unused(self):
        """The condition of an image record that no index holds."""
        return self.images.c.id.not_in(self.sa.select(self.entries.c.image_id))

    def image_totals(self) -> dict:
        """``{"bytes", "unused", "unused_bytes"}`` of the image records (unused: no index holds them)."""
        sa = self.sa
        size_of = sa.func.coalesce(sa.func.sum(self.images.c.bytes), 0)
        with self.engine.connect() as c:
            total = c.execute(sa.select(size_of)).scalar()
            count, size = c.execute(sa.select(sa.func.count(), size_of).where(self._unused())).one()
        return {"bytes": int(total), "unused": int(count), "unused_bytes": int(size)}

    def unused_images(self) -> list[dict]:
        """Image records that no index holds (what :meth:`delete_images` may remove)."""
        with self.engine.connect() as c:
            return [_row(r) for r in c.execute(self.images.select().where(self._unused())).all()]

    def delete_images(self, image_ids) -> None:
        """Remove image records that no index holds (a record an index took meanwhile is kept)."""
        ids = [int(i) for i in image_ids]
        with self.engine.begin() as c:
            for start in range(0, len(ids), 500):
                c.execute(self.images.delete().where(self.images.c.id.in_(ids[start : start + 500])).where(self._unused()))

    # -- jobs ------------------------------------------------------------------------------
    def add_job(self, kind: str, params: dict) -> int:
        with self.engine.begin() as c:
            result = c.execute(self.jobs.insert().values(kind=kind, status="queued", params=json.dumps(params), done=0, total=0,
                                                         rate=0.0, message="queued", result="{}", log="", created=time.time()))
            return int(result.inserted_primary_key[0])

    def job(self, job_id: int) -> dict | None:
        with self.engine.connect() as c:
            return _row(c.execute(self.jobs.select().where(self.jobs.c.id == int(job_id))).first(), ("params", "result"))

    def list_jobs(self, limit: int = 100) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(self.jobs.select().order_by(self.jobs.c.id.desc()).limit(int(limit))).all()
        return [_row(r, ("params", "result")) for r in rows]

    def update_job(self, job_id: int, **values) -> None:
        for name in ("params", "result"):
            if name in values:
                values[name] = json.dumps(values[name])
        with self.engine.begin() as c:
            c.execute(self.jobs.update().where(self.jobs.c.id == int(job_id)).values(**values))

    def set_status_of_trained_model(self, job: dict, status: str) -> None:
        """The status of the model a training ``job`` makes, where it is one and its model still exists."""
        if job["kind"] == "train" and self.model(job["params"]["model_id"]) is not None:
            self.update_model(job["params"]["model_id"], status=status)

    def cancel_queued_job(self, job_id: int) -> bool:
        """Mark a job cancelled if it is still queued (atomically: a worker may be claiming it); whether it was."""
        with self.engine.begin() as c:
            done = c.execute(self.jobs.update().where(self.jobs.c.id == int(job_id)).where(self.jobs.c.status == "queued")
                             .values(status="cancelled", message="cancelled before it started", finished=time.time()))
        return done.rowcount == 1

    def log_job(self, job_id: int, line: str) -> None:
        """Append a time-stamped line to a job's log."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.engine.begin() as c:
            c.execute(self.jobs.update().where(self.jobs.c.id == int(job_id))
                      .values(log=self.jobs.c.log + f"{stamp}  {line}\n"))

    def claim_next_job(self, kinds) -> dict | None:
        """The oldest queued job of ``kinds``, marked running (atomically), or None."""
        with self.engine.begin() as c:
            row = c.execute(self.jobs.select().where(self.jobs.c.status == "queued").where(self.jobs.c.kind.in_(list(kinds)))
                            .order_by(self.jobs.c.id).limit(1)).first()
            if row is None:
                return None
            claimed = c.execute(self.jobs.update().where(self.jobs.c.id == row.id).where(self.jobs.c.status == "queued")
                                .values(status="running", started=time.time(), message="starting"))
            if claimed.rowcount != 1:
                return None
        return self.job(row.id)

    def mark_interrupted(self) -> list[int]:
        """Jobs left running by a server that stopped: marked interrupted (they resume on request)."""
        sa = self.sa
        with self.engine.begin() as c:
            ids = [int(i) for i in c.execute(sa.select(self.jobs.c.id).where(self.jobs.c.status == "running")
                                                     .order_by(self.jobs.c.id)).scalars()]
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            for job in c.execute(self.jobs.select().where(self.jobs.c.id.in_(ids))).all():
                message = "interrupted: the server stopped while it ran"
                index_id = json.loads(job.params).get("index_id")
                if job.kind == "index" and index_id is not None:  # its progress counted images read, not saved
                    saved = c.execute(sa.select(self.indexes.c.ntotal).where(self.indexes.c.id == int(index_id))).scalar()
                    message += (f"; the images saved before it stopped stay (index {index_id} holds {saved or 0}), and "
                                "resuming adds the rest")
                elif job.kind == "rebuild":
                    message += f"; index {index_id} is as it was before the rebuild, and resuming rebuilds it"
                c.execute(self.jobs.update().where(self.jobs.c.id == job.id)
                          .values(status="interrupted", message=message, log=self.jobs.c.log + f"{stamp}  {message}\n"))
            if ids:
                c.execute(self.models.update().where(self.models.c.job_id.in_(ids)).where(self.models.c.status == "training")
                          .values(status="interrupted"))
        return ids

    def running_jobs_on_index(self, index_id: int) -> list[int]:
        with self.engine.connect() as c:
            rows = c.execute(self.jobs.select().where(self.jobs.c.status.in_(["queued", "running"]))
                             .where(self.jobs.c.kind.in_(["index", "rebuild"]))).all()
        return [int(r.id) for r in rows if json.loads(r.params).get("index_id") == int(index_id)]

    # -- training curves -------------------------------------------------------------------
    def add_curve_point(self, job_id: int, stage: str, epoch: int, seconds: float, metrics: dict) -> None:
        values = {k: (None if metrics.get(k) is None else float(metrics[k])) for k in ("loss", "accuracy", "val_accuracy", "images_per_s")}
        with self.engine.begin() as c:
            c.execute(self.curve.delete().where(self.curve.c.job_id == int(job_id)).where(self.curve.c.stage == stage)
                      .where(self.curve.c.epoch == int(epoch)))
            c.execute(self.curve.insert().values(job_id=int(job_id), stage=stage, epoch=int(epoch), seconds=float(seconds), **values))

    def curve_points(self, job_id: int) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(self.curve.select().where(self.curve.c.job_id == int(job_id))
                             .order_by(self.curve.c.stage, self.curve.c.epoch)).all()
        return [_row(r) for r in rows]
