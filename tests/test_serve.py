"""The web system (jaxhash serve): API, storage, jobs, restart, concurrency, bad input, browser."""
import io
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from jaxhash.serve.app import STATIC, create_app  # noqa: E402
from jaxhash.serve.files import Limits  # noqa: E402
from jaxhash.serve.service import Service  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (210, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 210)}


def write_photos(root: Path, per_class: int, seed: int = 0) -> Path:
    """Photos a user would bring: one folder per class, mixed sizes, JPEG, grey PNG and RGBA PNG."""
    rng = np.random.default_rng(seed)
    for c, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(18, 70, size=2))
            pixels = np.clip(rng.normal(colour, 35, size=(h, w, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if i % 5 == 1:
                image.convert("L").save(root / name / f"{i:03d}.png")
            elif i % 5 == 2:
                image.convert("RGBA").save(root / name / f"{i:03d}.png")
            else:
                image.save(root / name / f"{i:03d}.jpg", quality=90)
    return root


def jpeg_bytes(colour, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("roots") / "photos", per_class=12)


@pytest.fixture(scope="module")
def saved_model(photos):
    """A tiny cnn-softmax trained on the photos, saved as jaxhash fit saves it."""
    from jaxhash.data import load_image_folder
    from jaxhash.hashers import make_hasher

    sets = load_image_folder(photos, image_size=(16, 16), channels=3, progress=False)["all"]
    hasher = make_hasher("cnn-softmax", n_bits=24, preset="tiny", epochs=20, batch_size=8, progress=False)
    hasher.fit(sets.images, sets.labels)
    return hasher.save(photos.parent / "model")


@pytest.fixture
def service(tmp_path, photos):
    svc = Service(tmp_path / "data", allow_roots=[photos.parent], min_images_per_class=5)
    yield svc
    svc.stop()


@pytest.fixture
def client(service):
    return TestClient(create_app(service))


def ready_index(client, saved_model, photos, partitioned=True):
    """Import the model, create an index and fill it from the photos folder."""
    model = client.post("/api/models/import", json={"path": str(saved_model), "name": "colours"})
    assert model.status_code == 201, model.text
    index = client.post("/api/indexes", json={"name": "photos", "model_id": model.json()["id"], "partitioned": partitioned})
    assert index.status_code == 201, index.text
    job = client.post(f"/api/indexes/{index.json()['id']}/folder", json={"folder": str(photos)})
    assert job.status_code == 202, job.text
    done = client.app.state.service.wait_for_job(job.json()["id"], 120)
    assert done["status"] == "done", done
    return model.json()["id"], index.json()["id"]


def test_the_api_page_and_icon_are_served_from_the_server_itself(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "cdn" not in docs.text.lower()
    assert client.get("/redoc").status_code == 404
    assert client.get("/favicon.ico").headers["content-type"].startswith("image/svg+xml")


def test_page_actions_are_all_in_the_openapi_schema(client):
    page = client.get("/")
    assert page.status_code == 200 and "jaxhash" in page.text and "/static/app.js" in page.text
    script = (STATIC / "app.js").read_text()
    used = {re.sub(r"\$\{[^}]+\}", "{id}", p).split("?")[0] for p in re.findall(r"`?(/api/[^`\"'\s)]*)", script)}
    schema = client.get("/openapi.json").json()["paths"]
    known = {re.sub(r"\{[^}]+\}", "{id}", p) for p in schema}
    assert used and used <= known, sorted(used - known)
    for path in schema:
        assert schema[path], path


def test_index_search_and_maintain_through_the_api(client, saved_model, photos):
    model_id, index_id = ready_index(client, saved_model, photos)
    index = client.get(f"/api/indexes/{index_id}").json()
    assert index["ntotal"] == 36 and index["kind"] == "partitioned" and index["index_bytes"] > 0 and index["image_bytes"] > 0

    again = client.post(f"/api/indexes/{index_id}/folder", json={"folder": str(photos)}).json()
    done = client.app.state.service.wait_for_job(again["id"])
    assert done["result"]["added"] == 0 and done["result"]["duplicates"] == 36  # same files are not indexed twice

    red = (photos / "red" / "000.jpg").read_bytes()
    answer = client.post("/api/search", data={"index_id": index_id, "k": 10, "top_classes": 3},
                         files={"file": ("q.jpg", red, "image/jpeg")})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 10 and answer.json()["measure"] == "hamming"
    assert [r["hamming"] for r in results] == sorted(r["hamming"] for r in results)
    for r in results:
        assert r["similarity"] == pytest.approx(1 / (1 + r["distance"]), abs=1e-6)
    assert results[0]["hamming"] == 0 and results[0]["label"] == "red"

    first = results[0]["image_id"]
    by_id = client.post("/api/search", data={"index_id": index_id, "k": 5, "image_id": first, "rerank": 30, "top_classes": 3}).json()
    assert by_id["measure"] == "euclidean" and by_id["results"][0]["image_id"] == first
    assert by_id["results"][0]["distance"] == pytest.approx(0.0, abs=1e-5)

    thumb = client.get(f"/api/images/{first}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg" and max(Image.open(io.BytesIO(thumb.content)).size) >= 96
    assert client.get(f"/api/images/{first}").content[:2] == b"\xff\xd8"
    info = client.get(f"/api/images/{first}/info").json()
    assert info["label"] == "red" and info["width"] > 0 and len(info["sha256"]) == 64
    listed = client.get(f"/api/indexes/{index_id}/images", params={"limit": 5}).json()
    assert listed["total"] == 36 and len(listed["images"]) == 5

    removed = client.post(f"/api/indexes/{index_id}/remove", json={"image_ids": [first]}).json()
    assert removed == {"removed": 1, "ntotal": 35}
    ids = [r["image_id"] for r in client.post("/api/search", data={"index_id": index_id, "k": 36, "top_classes": 3},
                                               files={"file": ("q.jpg", red)}).json()["results"]]
    assert first not in ids and len(ids) == 35

    rebuild = client.post(f"/api/indexes/{index_id}/rebuild").json()
    assert client.app.state.service.wait_for_job(rebuild["id"])["result"]["ntotal"] == 35
    assert client.post(f"/api/indexes/{index_id}/clear").json()["ntotal"] == 0
    assert client.delete(f"/api/indexes/{index_id}").json() == {"deleted_index": index_id}
    assert client.get(f"/api/indexes/{index_id}").status_code == 404
    assert client.delete(f"/api/models/{model_id}").status_code == 200
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["journal_mode"] == "wal" and health["workers_alive"] == 2


def test_a_zip_upload_is_indexed(client, saved_model, photos, tmp_path):
    model_id, index_id = ready_index(client, saved_model, photos, partitioned=False)
    client.post(f"/api/indexes/{index_id}/clear")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted((photos / "blue").iterdir())[:4]:
            z.write(path, f"holiday/blue/{path.name}")
        z.writestr("holiday/other/000.jpg", jpeg_bytes((90, 90, 90)))  # a new image with the name of a blue one
        z.writestr("trip/other/000.jpg", jpeg_bytes((95, 90, 90)))  # the same folder and name from elsewhere
        z.writestr("holiday/notes.txt", "not an image")
        z.writestr("holiday/other/y.jpeg", "not an image either")
    job = client.post(f"/api/indexes/{index_id}/zip", files={"file": ("photos.zip", buffer.getvalue(), "application/zip")})
    assert job.status_code == 202, job.text
    done = client.app.state.service.wait_for_job(job.json()["id"])
    assert done["result"]["added"] == 6 and client.get(f"/api/indexes/{index_id}").json()["ntotal"] == 6
    images = client.get(f"/api/indexes/{index_id}/images").json()["images"]
    assert {r["label"] for r in images} == {"blue", "other"}
    assert sorted(r["name"] for r in images) == ["000 (2).jpg", "000.jpg", "000.jpg", "001.png", "002.png", "003.jpg"]
    assert "skipped other/y.jpeg: the file is not an image" in client.get(f"/api/jobs/{job.json()['id']}").json()["log"]
    assert not any((client.app.state.service.data_dir / "uploads").iterdir())  # unpacked files are removed after the job


def test_deleting_a_model_in_use_needs_consent(client, saved_model, photos):
    model_id, index_id = ready_index(client, saved_model, photos, partitioned=False)
    refused = client.delete(f"/api/models/{model_id}")
    assert refused.status_code == 409 and f"index {index_id}" in refused.json()["detail"]
    both = client.delete(f"/api/models/{model_id}", params={"with_indexes": "true"}).json()
    assert both == {"deleted_model": model_id, "deleted_indexes": [index_id]}
    assert client.get("/api/indexes").json() == [] and client.get("/api/models").json() == []


def test_space_of_images_no_index_holds_and_of_spare_checkpoints_is_freed_on_request(client, saved_model, photos):
    service = client.app.state.service
    model_id, first = ready_index(client, saved_model, photos, partitioned=False)
    second = client.post("/api/indexes", json={"name": "blue only", "model_id": model_id}).json()["id"]
    job = client.post(f"/api/indexes/{second}/folder", json={"folder": str(photos / "blue")}).json()
    assert service.wait_for_job(job["id"])["result"]["duplicates"] == 0  # the stored blue images, shared
    assert client.get(f"/api/images/{service.store.index_image_ids(first)[0]}/thumbnail").status_code == 200
    (service.data_dir / "jobs" / "77").mkdir()  # checkpoints of a job that no longer exists
    (service.data_dir / "jobs" / "77" / "state").write_bytes(b"x" * 1000)
    before = client.get("/api/disk").json()
    assert before["unused_images"] == 0 and before["spare_checkpoint_bytes"] == 1000 and before["bytes"]["images"] > 0
    assert client.delete(f"/api/indexes/{first}").status_code == 200
    disk = client.get("/api/disk").json()
    assert disk["unused_images"] == 24  # red and green; the blue ones are still in the second index
    # a stop between writing an index file and recording its entries: the file is the truth, nothing it holds goes
    service.store.set_index_contents(second, [], 0, replace=True)
    assert client.get("/api/disk").json()["unused_images"] == 36
    with service._images_lock:  # an index job is running
        busy = client.post("/api/disk/free")
    assert busy.status_code == 409 and "an index job is running" in busy.json()["detail"]
    freed = client.post("/api/disk/free").json()
    assert freed == {"images_removed": 24, "checkpoints_removed": 1, "bytes_freed": disk["unused_image_bytes"] + 1000 +
                     (before["bytes"]["thumbnails"] - client.get("/api/disk").json()["bytes"]["thumbnails"])}
    after = client.get("/api/disk").json()
    assert after["unused_images"] == 0 and after["bytes"]["images"] == before["bytes"]["images"] - disk["unused_image_bytes"]
    assert len(list((service.data_dir / "images").rglob("*.*"))) == 12 and not (service.data_dir / "jobs" / "77").exists()
    query = {"index_id": second, "k": 3}
    assert len(client.post("/api/search", data=query, files={"file": ("q.jpg", jpeg_bytes((40, 60, 210)))}).json()["results"]) == 3


def test_jobs_are_cancelled_keeping_what_they_did_and_resume_from_there(tmp_path, photos, saved_model, monkeypatch):
    from jaxhash.serve import jobs

    monkeypatch.setattr(jobs, "ENCODE_CHUNK", 8)
    svc = Service(tmp_path / "data", allow_roots=[photos.parent], min_images_per_class=5, workers=False)
    try:
        client = TestClient(create_app(svc))
        model = client.post("/api/models/import", json={"path": str(saved_model)}).json()
        index = client.post("/api/indexes", json={"name": "photos", "model_id": model["id"]}).json()["id"]
        job = client.post(f"/api/indexes/{index}/folder", json={"folder": str(photos)}).json()["id"]
        assert client.post(f"/api/jobs/{job}/cancel").json() == {"id": job, "status": "cancelled"}  # still queued
        assert svc.store.claim_next_job(["index"]) is None and svc.store.job(job)["message"] == "cancelled before it started"
        assert client.post(f"/api/jobs/{job}/cancel").status_code == 409  # once is enough
        assert client.post(f"/api/jobs/{job}/resume").status_code == 200
        claimed = svc.store.claim_next_job(["index"])
        assert client.post(f"/api/jobs/{job}/cancel").json()["status"] == "cancelling"  # running: stops at its next chunk
        jobs.run_job(svc, claimed)
        record = svc.store.job(job)
        assert record["status"] == "cancelled", record
        assert record["message"] == ("cancelled after 8 of 36 images: the 8 added stay in the index (it holds 8); running it "
                                     "again adds the rest")
        assert client.get(f"/api/indexes/{index}").json()["ntotal"] == 8
        assert client.post(f"/api/jobs/{job}/resume").status_code == 200
        jobs.run_job(svc, svc.store.claim_next_job(["index"]))
        assert svc.store.job(job)["result"]["added"] == 28 and client.get(f"/api/indexes/{index}").json()["ntotal"] == 36
        gone = client.post("/api/indexes", json={"name": "gone", "model_id": model["id"]}).json()["id"]
        orphan = client.post(f"/api/indexes/{gone}/folder", json={"folder": str(photos)}).json()["id"]
        client.post(f"/api/jobs/{orphan}/cancel")
        assert client.delete(f"/api/indexes/{gone}").status_code == 200
        refused = client.post(f"/api/jobs/{orphan}/resume")
        assert refused.status_code == 409 and f"index {gone} of job {orphan} was deleted" in refused.json()["detail"]

        train = client.post("/api/train", json={"name": "t", "folder": str(photos), "preset": "tiny", "epochs": 3,
                                                "n_bits": 16, "method": "cnn-softmax"}).json()
        claimed = svc.store.claim_next_job(["train"])
        client.post(f"/api/jobs/{train['id']}/cancel")
        jobs.run_job(svc, claimed)
        record = client.get(f"/api/jobs/{train['id']}").json()
        assert record["status"] == "cancelled" and record["message"].startswith("cancelled after classifier epoch 1 of 3")
        assert client.get(f"/api/models/{train['model_id']}").json()["status"] == "cancelled"
        assert client.post(f"/api/jobs/{train['id']}/resume").status_code == 200
        jobs.run_job(svc, svc.store.claim_next_job(["train"]))
        record = client.get(f"/api/jobs/{train['id']}").json()
        assert record["status"] == "done" and [p["epoch"] for p in record["curve"]] == [1, 2, 3]  # on from the checkpoint
        assert client.get(f"/api/models/{train['model_id']}").json()["status"] == "ready"

        last = client.post("/api/train", json={"name": "one epoch", "folder": str(photos), "preset": "tiny", "epochs": 1,
                                               "n_bits": 16, "method": "cnn-softmax"}).json()
        claimed = svc.store.claim_next_job(["train"])
        client.post(f"/api/jobs/{last['id']}/cancel")
        jobs.run_job(svc, claimed)  # asked during its last epoch: the finished training is kept, not thrown away
        assert svc.store.job(last["id"])["status"] == "done" and not svc.cancel_asked(last["id"])
        assert client.get(f"/api/models/{last['model_id']}").json()["status"] == "ready"
    finally:
        svc.stop()


def test_a_query_that_is_a_stored_image_finds_itself_first_among_equal_distances(client, saved_model, photos):
    _, index_id = ready_index(client, saved_model, photos, partitioned=False)
    tied = 0
    for path in sorted((photos / "green").iterdir())[:6]:
        results = client.post("/api/search", data={"index_id": index_id, "k": 12},
                              files={"file": ("q", path.read_bytes())}).json()["results"]
        assert (results[0]["name"], results[0]["distance"]) == (path.name, 0.0), results[:3]
        tied += sum(r["distance"] == 0 for r in results) > 1
        one = client.post("/api/search", data={"index_id": index_id, "k": 1}, files={"file": ("q", path.read_bytes())}).json()
        assert one["results"][0]["name"] == path.name  # even where more than k images tie with it
        by_id = client.post("/api/search", data={"index_id": index_id, "k": 12, "image_id": results[0]["image_id"]}).json()
        assert by_id["results"][0]["image_id"] == results[0]["image_id"]
    assert tied  # the case this is about: other images at distance 0 too


def test_index_jobs_hold_the_lock_that_freeing_space_takes(tmp_path, photos, saved_model, monkeypatch):
    from jaxhash.serve import jobs

    seen, real = {}, jobs.run_job

    def watched(service, job):
        seen[job["kind"]] = service._images_lock.locked()
        real(service, job)

    monkeypatch.setattr(jobs, "run_job", watched)
    svc = Service(tmp_path / "data", allow_roots=[photos.parent])
    try:
        ready_index(TestClient(create_app(svc)), saved_model, photos, partitioned=False)
        assert seen == {"index": True}
    finally:
        svc.stop()


def test_deleting_a_model_with_its_indexes_is_all_or_nothing(client, saved_model, photos, monkeypatch):
    model_id, first = ready_index(client, saved_model, photos, partitioned=False)
    second = client.post("/api/indexes", json={"name": "second", "model_id": model_id}).json()["id"]
    store = client.app.state.service.store
    busy = store.running_jobs_on_index
    monkeypatch.setattr(store, "running_jobs_on_index", lambda i: [99] if i == second else busy(i))  # the second is being filled
    refused = client.delete(f"/api/models/{model_id}", params={"with_indexes": "true"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["detail"] == (f"index {second} is being changed by job 99: delete model {model_id} with its indexes "
                                        "when it has finished")
    assert sorted(i["id"] for i in client.get("/api/indexes").json()) == [first, second]  # nothing was deleted
    assert client.get(f"/api/indexes/{first}").json()["ntotal"] == 36
    monkeypatch.undo()
    assert client.delete(f"/api/models/{model_id}", params={"with_indexes": "true"}).json()["deleted_indexes"] == [first, second]


def test_a_re_rank_an_index_cannot_do_is_said_and_the_answer_stays_in_hamming_order(client, photos, tmp_path):
    from jaxhash.data import load_image_folder
    from jaxhash.hashers import make_hasher

    images = load_image_folder(photos, image_size=(8, 8), channels=3, progress=False)["all"].images
    itq = make_hasher("itq", n_bits=16, seed=0).fit(images).save(photos.parent / "itq16")  # a pixel hasher: no features
    model = client.post("/api/models/import", json={"path": str(itq)})
    assert model.status_code == 201, model.text
    index = client.post("/api/indexes", json={"name": "pixels", "model_id": model.json()["id"]}).json()
    job = client.post(f"/api/indexes/{index['id']}/folder", json={"folder": str(photos)}).json()
    assert client.app.state.service.wait_for_job(job["id"])["status"] == "done"
    answer = client.post("/api/search", data={"index_id": index["id"], "k": 4, "rerank": 50},
                         files={"file": ("q.jpg", (photos / "red" / "000.jpg").read_bytes())}).json()
    assert answer["measure"] == "hamming" and answer["predicted_class"] is None and answer["predicted_label"] is None
    assert answer["note"] == (f"not re-ranked: index {index['id']} keeps no features (its model, itq, has none), so the "
                              "results are in Hamming order")


def test_a_search_on_an_index_whose_model_files_are_gone_says_so(tmp_path, photos, saved_model):
    svc = Service(tmp_path / "data", allow_roots=[photos.parent])
    model_id, index_id = ready_index(TestClient(create_app(svc)), saved_model, photos, partitioned=False)
    svc.stop()
    shutil.rmtree(tmp_path / "data" / "models" / str(model_id))  # deleted by hand while the server was down
    svc = Service(tmp_path / "data", allow_roots=[photos.parent])
    try:
        client = TestClient(create_app(svc))
        answer = client.post("/api/search", data={"index_id": index_id}, files={"file": ("q.jpg", jpeg_bytes((200, 0, 0)))})
        assert answer.status_code == 409 and f"model {model_id}" in answer.json()["detail"], answer.text
        assert client.get("/api/indexes").status_code == 200
        refused = client.delete(f"/api/models/{model_id}")  # the database still knows the index uses it
        assert refused.status_code == 409
        assert client.delete(f"/api/models/{model_id}", params={"with_indexes": "true"}).status_code == 200
    finally:
        svc.stop()


def _zip_bytes(members) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return buffer.getvalue()


def test_bad_input_gets_a_clear_4xx_and_nothing_breaks(tmp_path, photos, saved_model):
    outside = write_photos(tmp_path / "outside", per_class=2)
    (photos.parent / "link").unlink(missing_ok=True)
    (photos.parent / "link").symlink_to(outside)
    svc = Service(tmp_path / "data", allow_roots=[photos.parent], min_images_per_class=5,
                  limits=Limits(upload_bytes=50_000, zip_bytes=100_000, image_pixels=1_000_000, zip_ratio=50))
    try:
        client = TestClient(create_app(svc))
        model_id, index_id = ready_index(client, saved_model, photos, partitioned=False)

        def search(data, name="q.jpg"):
            return client.post("/api/search", data={"index_id": index_id}, files={"file": (name, data)})

        cases = {
            "not an image": (search(b"hello, not a picture"), 415, "not an image"),
            "truncated": (search((photos / "red" / "000.jpg").read_bytes()[:-400]), 415, "truncated"),
            "too many bytes": (search(b"\xff" * 60_000), 413, "larger than the limit"),
            "too many pixels": (search(_png_of_size(2000, 1000)), 413, "more than the limit"),
            "a decompression bomb": (search(_png_of_size(14000, 14000, mode="1")), 413,
                                     "the image has 196,000,000 pixels, more than the limit of 1,000,000"),
            "no query": (client.post("/api/search", data={"index_id": index_id}), 400, "exactly one query"),
            "unknown index": (client.post("/api/search", data={"index_id": 999}, files={"file": ("q.jpg", jpeg_bytes((1, 2, 3)))}),
                              404, "no index 999"),
            "unknown image": (client.post("/api/search", data={"index_id": index_id, "image_id": 12345}), 404, "no image"),
            "unknown model": (client.delete("/api/models/77"), 404, "no model 77"),
            "unknown job": (client.post("/api/jobs/55/resume"), 404, "no job 55"),
            "outside the roots": (client.post(f"/api/indexes/{index_id}/folder", json={"folder": str(outside)}), 403, "outside"),
            "climbing out": (client.post(f"/api/indexes/{index_id}/folder", json={"folder": str(photos / ".." / "..")}), 403,
                             "outside"),
            "a symlink out": (client.post(f"/api/indexes/{index_id}/folder", json={"folder": str(photos.parent / "link")}), 403,
                              "outside"),
            "missing folder": (client.post(f"/api/indexes/{index_id}/folder", json={"folder": str(photos / "nope")}), 404,
                               "does not exist"),
            "zip escaping": (client.post(f"/api/indexes/{index_id}/zip",
                                         files={"file": ("x.zip", _zip_bytes([("../../evil.jpg", jpeg_bytes((1, 1, 1)))]))}), 400,
                             "outside its folder"),
            "zip bomb": (client.post(f"/api/indexes/{index_id}/zip", files={"file": ("x.zip", _zip_bytes([("a/b.png", b"\0" * 2_000_000)]))}),
                         413, "zip bomb"),
            "zip too large": (client.post(f"/api/indexes/{index_id}/zip", files={"file": ("x.zip", b"\0" * 200_000)}), 413,
                              "larger than the limit"),
            "body too large": (client.post(f"/api/indexes/{index_id}/zip", files={"file": ("x.zip", b"\0" * 1_300_000)}), 413,
                               "request is larger than the limit"),
            "not a zip": (client.post(f"/api/indexes/{index_id}/zip", files={"file": ("x.zip", b"PK nonsense")}), 400, "not a readable zip"),
            "one class": (client.post("/api/train", json={"name": "m", "folder": str(photos / "red"), "preset": "tiny"}), 400,
                          "at least two classes"),
            "too few images": (client.post("/api/train", json={"name": "m", "folder": str(photos), "preset": "tiny",
                                                                "min_images_per_class": 50}), 400, "fewer than 50 images"),
            "huge re-rank": (client.post("/api/search", data={"index_id": index_id, "rerank": 10**9},
                                     files={"file": ("q.jpg", jpeg_bytes((1, 2, 3)))}), 400, "rerank must be"),
            "bad method": (client.post("/api/train", json={"name": "m", "folder": str(photos), "method": "nope"}), 400, "method must"),
            "wrong model for partitions": (client.post("/api/indexes", json={"name": "x", "model_id": 999}), 404, "no model"),
        }
        for name, (response, status, words) in cases.items():
            assert response.status_code == status, (name, response.status_code, response.text)
            assert words in response.json()["detail"], (name, response.json())
        uploads = svc.data_dir / "uploads"
        assert not any(uploads.iterdir()), list(uploads.iterdir())  # refused zips leave nothing behind
        assert not (tmp_path / "evil.jpg").exists()
        assert client.get("/api/health").json()["status"] == "ok"
        assert client.get(f"/api/indexes/{index_id}").json()["ntotal"] == 36  # nothing stored was lost
        page = client.get("/")
        assert page.status_code == 200
    finally:
        svc.stop()
        (photos.parent / "link").unlink(missing_ok=True)


def _png_of_size(width, height, mode="L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), 0).save(out, "PNG")  # one value: small files of many pixels
    return out.getvalue()


def test_writes_need_the_token_when_one_is_set(service, photos, saved_model):
    client = TestClient(create_app(service, token="s3cret"))
    refused = client.post("/api/models/import", json={"path": str(saved_model)})
    assert refused.status_code == 401 and "token" in refused.json()["detail"]
    assert client.post("/api/models/import", json={"path": str(saved_model)},
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.post("/api/models/import", json={"path": str(saved_model)}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert client.get("/api/models").status_code == 200  # reading needs no token
    assert client.get("/api/settings").json()["token_required"] is True
    schema = client.get("/openapi.json").json()["paths"]
    writes = [(method, path.replace("{model_id}", "1").replace("{index_id}", "1").replace("{job_id}", "1"))
              for path, methods in schema.items() for method in methods if method in ("post", "delete") and path != "/api/search"]
    assert len(writes) >= 12
    for method, path in writes:  # every change needs the token
        answer = client.request(method.upper(), path)
        assert answer.status_code == 401, (method, path, answer.status_code)


def test_requests_from_other_sites_are_refused(service):
    client = TestClient(create_app(service, allowed_hosts={"127.0.0.1", "localhost", "::1"}), base_url="http://127.0.0.1:8000")
    assert client.get("/api/health").status_code == 200
    rebound = client.get("/api/health", headers={"host": "evil.example:8000"})
    assert rebound.status_code == 421  # a DNS-rebinding page names its own host
    cross = client.post("/api/indexes/1/clear", headers={"origin": "http://evil.example"})
    assert cross.status_code == 403 and "another site" in cross.json()["detail"]
    same = client.post("/api/indexes/1/clear", headers={"origin": "http://127.0.0.1:8000"})
    assert same.status_code == 404  # reaches the route: there is no index 1
    from jaxhash.serve.app import _host_name

    assert [_host_name(h) for h in ("127.0.0.1:8000", "[::1]:80", "LOCALHOST", "::1")] == ["127.0.0.1", "::1", "localhost", "::1"]


def test_serve_refuses_to_listen_beyond_loopback_without_a_token(tmp_path):
    from jaxhash.cli import main
    from jaxhash.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    assert main(["serve", "--data-dir", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert not (tmp_path / "jaxhash.sqlite").exists()


def test_serve_checks_its_options_before_starting_anything(tmp_path, capsys):
    from jaxhash.cli import main

    data = tmp_path / "data"
    for bad, said in ((["--port", "99999"], "argument --port: expected a port number from 1 to 65535, got '99999'"),
                      (["--min-images-per-class", "1"], "argument --min-images-per-class: expected at least 2"),
                      (["--allow-root", str(tmp_path / "nowhere")], "is not a folder (it does not exist)"),
                      (["--database-url", "notaurl"], "--database-url 'notaurl' is not a database URL")):
        try:
            code = main(["serve", "--data-dir", str(data), *bad])
        except SystemExit as stop:  # argparse's own refusals
            code = stop.code
        assert code == 2 and said in capsys.readouterr().err
    assert not data.exists()  # nothing was made for a server that did not start
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--data-dir", str(tmp_path / "other"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}: another program" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(tmp_path / "other"), "--host", "192.0.2.1", "--token", "t"]) == 2  # not ours
    assert "cannot listen on 192.0.2.1:8000: " in capsys.readouterr().err and not (tmp_path / "other").exists()
    assert not (tmp_path / "other").exists()  # refused before the data folder was made


def test_a_second_server_on_the_same_data_folder_is_refused(tmp_path):
    from jaxhash.serve.service import DataDirInUseError
    from jaxhash.serve.store import _without_password

    first = Service(tmp_path / "data", workers=False)
    try:
        with pytest.raises(DataDirInUseError, match=f"another jaxhash serve \\(process {os.getpid()}\\) is using"):
            Service(tmp_path / "data", workers=False)
    finally:
        first.stop()
    Service(tmp_path / "data", workers=False).stop()  # free again once the first has stopped
    assert _without_password("postgresql://bob:secret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert _without_password("postgresql://bob@db/x") == "postgresql://bob@db/x"


def test_training_jobs_queue_and_report_the_summary(client, photos):
    first = client.post("/api/train", json={"name": "first", "folder": str(photos), "preset": "tiny", "epochs": 3, "n_bits": 16,
                                            "method": "cnn-softmax"})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:  # the same classes, uploaded
        for path in sorted(photos.rglob("*.*")):
            z.write(path, f"upload/{path.parent.name}/{path.name}")
        z.writestr("upload/red/broken.jpg", b"not a JPEG")
    second = client.post("/api/train/zip", data={"name": "second", "preset": "tiny", "epochs": 2, "method": "cnn-hash",
                                                 "n_bits": 16}, files={"file": ("classes.zip", buffer.getvalue())})
    assert first.status_code == 202 and second.status_code == 202, (first.text, second.text)
    assert second.json()["status"] == "queued"  # one training at a time: the second waits, it is not lost
    service = client.app.state.service
    for job in (first.json(), second.json()):
        done = service.wait_for_job(job["id"], 300)
        assert done["status"] == "done", done
        record = client.get(f"/api/jobs/{job['id']}").json()
        epochs = job["params"]["epochs"]
        assert [p["epoch"] for p in record["curve"]] == list(range(1, epochs + 1))
        assert all(p["loss"] is not None and p["val_accuracy"] is not None for p in record["curve"])
        model = client.get(f"/api/models/{job['model_id']}").json()
        summary = model["summary"]
        assert model["status"] == "ready" and summary["iterations"] > 0 and summary["seconds"] > 0
        assert summary["trained_at"] and summary["validation_accuracy"] is not None and summary["classes"] == sorted(COLOURS)
        assert len(model["curve"]) == epochs and "epoch 1/" in record["log"]
    assert "skipped 1 file that cannot be read as images: red/broken.jpg" in client.get(f"/api/jobs/{second.json()['id']}").json()["log"]
    listed = client.get("/api/jobs").json()
    assert [j["id"] for j in listed[:2]] == [second.json()["id"], first.json()["id"]] and "log" not in listed[0]
    assert not any((service.data_dir / "uploads").iterdir())  # the unpacked upload is removed after training
    assert not any((service.data_dir / "jobs").iterdir())  # and the checkpoints, once the model is saved
    index = client.post("/api/indexes", json={"name": "fresh", "model_id": second.json()["model_id"]}).json()
    job = client.post(f"/api/indexes/{index['id']}/folder", json={"folder": str(photos)}).json()
    assert service.wait_for_job(job["id"])["result"]["added"] == 36  # the trained model builds indexes
    answer = client.post("/api/search", data={"index_id": index["id"], "k": 3},
                         files={"file": ("q.jpg", (photos / "red" / "000.jpg").read_bytes())}).json()
    assert answer["predicted_label"] == sorted(COLOURS)[answer["predicted_class"]]  # by the name of its folder


def test_a_training_whose_folder_changed_is_not_resumed_and_small_classes_are_named_by_their_folder(tmp_path, photos):
    from jaxhash.serve.files import RequestError

    folder = tmp_path / "roots" / "classes"
    shutil.copytree(photos, folder)
    svc = Service(tmp_path / "data", allow_roots=[folder.parent], min_images_per_class=5, workers=False)
    try:
        job_id, _ = svc.submit_train_job("colours", "cnn-softmax", 16, "tiny", epochs=2, folder=str(folder))
        svc.store.update_job(job_id, status="interrupted")  # the server was stopped mid-training
        (folder / "red" / "nested").mkdir()
        shutil.copy(folder / "red" / "000.jpg", folder / "red" / "nested" / "x.jpg")
        with pytest.raises(RequestError, match=r"job \d+ cannot go on: its folder has changed, and 1 of 4 classes have fewer "
                                               r"than 5 images: nested \(1, in red/nested\)\. A class is the folder that holds "
                                               r"its images: add images, or move these"):
            svc.resume_job(job_id)
        for i in range(4):
            shutil.copy(folder / "red" / "000.jpg", folder / "red" / "nested" / f"{i}.jpg")
        with pytest.raises(RequestError, match="now has 4 classes and the training began with 3, so its checkpoints do not fit"):
            svc.resume_job(job_id)
        shutil.rmtree(folder / "red" / "nested")
        (folder / "red").rename(folder / "crimson")  # as many classes, but one of them another
        with pytest.raises(RequestError, match=r"the classes of its folder have changed \(crimson, red\)"):
            svc.resume_job(job_id)
        (folder / "crimson").rename(folder / "red")
        svc.resume_job(job_id)  # as it was: queued again
        assert svc.store.job(job_id)["status"] == "queued"
    finally:
        svc.stop()


def test_a_restart_finds_everything_as_it_was(tmp_path, photos, saved_model):
    data = tmp_path / "data"
    first = Service(data, allow_roots=[photos.parent])
    client = TestClient(create_app(first))
    _, index_id = ready_index(client, saved_model, photos)
    query = {"data": {"index_id": index_id, "k": 8, "top_classes": 3},
             "files": {"file": ("q.jpg", (photos / "green" / "003.jpg").read_bytes())}}
    before = client.post("/api/search", **query).json()["results"]
    state = [client.get(p).json() for p in ("/api/models", "/api/indexes")]
    first.stop()

    second = Service(data, allow_roots=[photos.parent])
    try:
        client = TestClient(create_app(second))
        assert [client.get(p).json() for p in ("/api/models", "/api/indexes")] == state
        assert client.post("/api/search", **query).json()["results"] == before
    finally:
        second.stop()


def test_concurrent_searches_while_an_index_grows(tmp_path, photos, saved_model, monkeypatch):
    from jaxhash.serve import jobs

    monkeypatch.setattr(jobs, "_SAVE_EVERY_SECONDS", 0.0)  # the file is replaced after every chunk: searches see it grow
    more = tmp_path / "roots" / "more"
    write_photos(more, per_class=150, seed=5)
    svc = Service(tmp_path / "data", allow_roots=[photos.parent, more.parent])
    try:
        client = TestClient(create_app(svc))
        _, index_id = ready_index(client, saved_model, photos, partitioned=False)
        query = (photos / "blue" / "004.jpg").read_bytes()
        assert client.post("/api/search", data={"index_id": index_id, "k": 5}, files={"file": ("q.jpg", query)}).status_code == 200
        job = client.post(f"/api/indexes/{index_id}/folder", json={"folder": str(more)}).json()
        answers, failures = [], []

        def searcher():
            local = TestClient(create_app(svc))
            while svc.store.job(job["id"])["status"] in ("queued", "running"):
                r = local.post("/api/search", data={"index_id": index_id, "k": 5}, files={"file": ("q.jpg", query)})
                ok = r.status_code == 200 and len(r.json()["results"]) == 5
                (answers if ok else failures).append(r.json()["ntotal"] if ok else r.status_code)

        threads = [threading.Thread(target=searcher) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert svc.wait_for_job(job["id"])["result"]["added"] == 450
        assert not failures and len(answers) >= 8, (len(answers), failures)
        assert min(answers) == 36 and max(answers) > 36  # the searches saw the index grow
        assert client.get(f"/api/indexes/{index_id}").json()["ntotal"] == 486
    finally:
        svc.stop()


def test_the_query_batcher_gives_each_caller_its_own_answer():
    from jaxhash.serve.service import QueryBatcher

    sizes = []

    def run(key, items):
        sizes.append(len(items))
        time.sleep(0.01)
        if key == "bad":
            raise ValueError("broken batch")
        return [(key, item * 2) for item in items]

    batcher = QueryBatcher(run)
    answers = {}

    def caller(i):
        answers[i] = batcher.submit("k" if i % 2 else "j", i)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {i: ("k" if i % 2 else "j", 2 * i) for i in range(40)}
    assert max(sizes) > 1 and sum(sizes) == 40  # callers that arrived together shared a run
    assert batcher.submit("k", 5) == ("k", 10)  # alone, a call runs at once
    with pytest.raises(ValueError, match="broken batch"):
        batcher.submit("bad", 1)
    assert batcher.submit("bad2", 1) == ("bad2", 2) and not batcher._busy


# -- storage on SQLite and PostgreSQL ----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name: str):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory):
    """A throw-away PostgreSQL server on loopback (Debian's postgresql package), or a skip with the reason."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'jaxhash[postgres]')")
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql to run this test")
    folder = tmp_path_factory.mktemp("postgres")
    run_as = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if not shutil.which("runuser") or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a postgres user to start PostgreSQL as")
        shutil.chown(folder, "postgres")
        folder.chmod(0o700)
        for parent in folder.parents:  # the postgres user must be able to reach the folder
            if parent == Path(parent.anchor):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pgdata = folder / "db"
    setup = subprocess.run([*run_as, initdb, "-D", str(pgdata), "-A", "trust", "-U", "postgres"], capture_output=True, text=True)
    if setup.returncode:
        pytest.skip(f"initdb failed: {setup.stderr.strip()[-300:]}")
    start = subprocess.run([*run_as, pg_ctl, "-D", str(pgdata), "-w", "-l", str(folder / "log"), "-o",
                            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], capture_output=True, text=True)
    if start.returncode:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*run_as, pg_ctl, "-D", str(pgdata), "-m", "immediate", "stop"], capture_output=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url = request.getfixturevalue("postgres_url")
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as c:  # each test starts from an empty database
        c.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    engine.dispose()
    return url


def test_store_keeps_records_and_claims_each_job_once(store_url):
    from jaxhash.serve.store import Store

    store = Store(store_url)
    try:
        record = {"sha256": "ab" * 32, "path": "images/ab/x.jpg", "name": "x.jpg", "label": "cats", "width": 64, "height": 48,
                  "bytes": 1000}
        image = store.add_images([record])["ab" * 32]
        again = store.add_images([{**record, "path": "elsewhere", "name": "y.jpg", "label": None, "bytes": 1}])
        assert again == {"ab" * 32: image}  # one row per content hash
        assert store.images_by_sha(["ab" * 32, "cd" * 32])["ab" * 32]["label"] == "cats"
        model = store.add_model("m", "cnn-softmax", 64, "ready", "models/1", {"classes": ["a", "b"]})
        index = store.add_index("i", model, "flat")
        store.set_index_contents(index, [image], 1)
        assert store.index_image_ids(index) == [image] and store.index(index)["path"] == f"indexes/{index}.jhx"
        assert store.index_image_bytes(index) == 1000 and store.index_images(index, 0, 10) == (1, [store.image(image)])
        jobs = [store.add_job("index", {"index_id": index}) for _ in range(6)]
        claimed, lock = [], threading.Lock()

        def worker():
            while (job := store.claim_next_job(["index"])) is not None:
                with lock:
                    claimed.append(job["id"])

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claimed) == jobs  # every job once, never twice
        store.add_curve_point(jobs[0], "classifier", 1, 2.0, {"loss": 1.5, "val_accuracy": 0.5})
        store.add_curve_point(jobs[0], "classifier", 1, 2.0, {"loss": 1.25})  # a resumed epoch replaces its point
        assert [(p["epoch"], p["loss"]) for p in store.curve_points(jobs[0])] == [(1, 1.25)]
        store.log_job(jobs[0], "hello")
        assert "hello" in store.job(jobs[0])["log"]
        assert store.mark_interrupted() == jobs and store.job(jobs[2])["status"] == "interrupted"
        said = (f"interrupted: the server stopped while it ran; the images saved before it stopped stay (index {index} holds 1), "
                "and resuming adds the rest")
        assert store.job(jobs[2])["message"] == said and store.job(jobs[2])["log"].endswith(f"  {said}\n")
        assert store.model(model)["summary"] == {"classes": ["a", "b"]}
    finally:
        store.close()
    again = Store(store_url.replace("+psycopg", ""))  # a restarted server (a plain postgresql:// URL) sees the same records
    try:
        assert again.list_models()[0]["name"] == "m" and len(again.list_jobs()) == 6
    finally:
        again.close()


# -- a real server: restart during training, and a real browser -----------------------------------

def _start_server(data: Path, roots, port: int, log):
    from jaxhash.serve import start_server_process

    env = {**os.environ, "PYTHONPATH": str(REPO), "JAXHASH_CACHE_DIR": "off"}
    return start_server_process(data, port, roots, ["--min-images-per-class", "5"], log, timeout=90, env=env)


def _wait(check, timeout=180.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def test_a_killed_server_resumes_training_from_its_checkpoint(tmp_path, photos):
    import httpx

    data, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w") as log:
        server = _start_server(data, [photos.parent], port, log)
        try:
            job = httpx.post(f"{base}/api/train", json={"name": "resumed", "folder": str(photos), "preset": "tiny",
                                                         "epochs": 40, "n_bits": 16}).json()
            _wait(lambda: httpx.get(f"{base}/api/jobs/{job['id']}").json()["done"] >= 2)
        finally:
            server.kill()  # as a power cut would: no clean shutdown
            server.wait()
        server = _start_server(data, [photos.parent], port, log)
        try:
            record = httpx.get(f"{base}/api/jobs/{job['id']}").json()
            assert record["status"] == "interrupted" and "interrupted" in record["message"]
            assert httpx.post(f"{base}/api/jobs/{job['id']}/resume").status_code == 200
            finished = _wait(lambda: (r := httpx.get(f"{base}/api/jobs/{job['id']}").json())["status"] in ("done", "failed") and r)
            assert finished["status"] == "done", finished["log"]
            assert [p["epoch"] for p in finished["curve"]] == list(range(1, 41))
            epochs_run = re.findall(r"epoch (\d+)/40", finished["log"])
            # the resumed run started from the checkpoint, not from epoch 1 (at most the epoch cut short runs twice)
            assert epochs_run.count("1") == 1 and len(epochs_run) <= 41, finished["log"]
            model = httpx.get(f"{base}/api/models/{job['model_id']}").json()
            assert model["status"] == "ready"
        finally:
            server.terminate()
            server.wait(30)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_the_page_in_a_real_browser(tmp_path, photos, saved_model):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    browser_path = _chromium()
    if browser_path is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (scripts/install.sh does)")
    data, port = tmp_path / "data", _free_port()
    base = f"http://127.0.0.1:{port}"
    import httpx

    with open(tmp_path / "server.log", "w") as log:
        server = _start_server(data, [photos.parent], port, log)
        try:
            model = httpx.post(f"{base}/api/models/import", json={"path": str(saved_model), "name": "colours"}).json()
            httpx.post(f"{base}/api/indexes", json={"name": "photos", "model_id": model["id"]})
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=browser_path, args=[
                    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync"])
                page = browser.new_page()
                page.goto(base)
                page.click("button[data-tab=indexes]")
                page.fill("#index-folder", str(photos))
                page.click("#index-start")
                page.wait_for_selector(".job[data-status=done] >> text=100%", timeout=120_000)
                page.click("button[data-tab=search]")
                page.set_input_files("#query-file", str(photos / "green" / "005.jpg"))
                page.wait_for_selector("#results .result img", timeout=60_000)
                page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
                cards = page.query_selector_all("#results .result")
                assert len(cards) == 20 and "%" in cards[0].inner_text()
                chosen = cards[1].get_attribute("data-id")
                cards[1].click()  # a click on a result searches with it
                page.wait_for_selector(f"#results[data-query='image {chosen}'] .result img")
                assert page.get_attribute("#query-preview", "src").endswith(f"/api/images/{chosen}/thumbnail")
                page.click("button[data-tab=train]")
                page.fill("#train-folder", str(photos / "red"))
                page.click("#train-start")
                page.wait_for_selector("#message >> text=at least two classes")  # a readable message on the page
                offline = []  # the API page reaches no other site: the server may have no internet
                page.on("request", lambda r: offline.append(r.url) if not r.url.startswith(base) else None)
                page.goto(f"{base}/docs")
                page.wait_for_selector('.endpoint .path >> text="/api/search"')
                assert len(page.query_selector_all(".endpoint")) >= 20 and not offline, offline
                browser.close()
        finally:
            server.terminate()
            server.wait(30)
