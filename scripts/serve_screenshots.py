#!/usr/bin/env python
"""Screenshots of the search system's pages, driven in a real browser (Chromium via Playwright).

Starts ``jaxhash serve`` on a fresh data folder, trains a cnn-softmax model on a photo folder
through the page's API (the training page is shot mid-job, with its live curve), indexes the
folder, searches with one photo, and shoots the search, training and maintenance pages:

    python scripts/serve_screenshots.py --photos ../shared/data/tiny-imagenet-40.tar.gz --out results/serve
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(REPO.parent / "shared/data/tiny-imagenet-40.tar.gz"))
    parser.add_argument("--out", default=str(REPO / "results" / "serve"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--method", default="cnn-hash", choices=("cnn-hash", "cnn-softmax"))
    parser.add_argument("--query", default=None, help="the query photo (default: the first photo of the third class)")
    args = parser.parse_args()

    import httpx
    from playwright.sync_api import sync_playwright

    from jaxhash.serve import start_server_process

    work = Path(tempfile.mkdtemp(prefix="jaxhash-shots-"))
    photos = Path(args.photos)
    if not photos.is_dir():
        with tarfile.open(photos) as tar:
            tar.extractall(work / "photos", filter="data")
        photos = work / "photos"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    log = open(work / "server.log", "w")
    server = start_server_process(work / "data", port, [photos], ["--log-level", "warning"], log,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        root = photos.resolve()
        job = httpx.post(f"{base}/api/train", json={"name": "my photos", "folder": str(root), "preset": "cpu", "method": args.method,
                                                   "epochs": args.epochs, "n_bits": 64}, timeout=60)
        assert job.status_code == 202, job.text
        job = job.json()
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(base)
            page.click("button[data-tab=train]")
            while httpx.get(f"{base}/api/jobs/{job['id']}").json()["done"] < max(3, args.epochs // 2):
                time.sleep(1)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "train_midjob.png"), full_page=True)
            while httpx.get(f"{base}/api/jobs/{job['id']}").json()["status"] in ("queued", "running"):
                time.sleep(1)
            index = httpx.post(f"{base}/api/indexes", json={"name": "my photos", "model_id": job["model_id"]}).json()
            page.click("button[data-tab=indexes]")
            page.fill("#index-folder", str(root))
            page.select_option("#index-target", str(index["id"]))
            page.click("#index-start")
            page.wait_for_selector(".job[data-status=done] >> text=100%", timeout=600_000)
            classes = sorted(c for c in root.iterdir() if c.is_dir())
            query = Path(args.query) if args.query else sorted(classes[2].iterdir())[0]
            page.click("button[data-tab=search]")
            page.select_option("#search-index", str(index["id"]))
            page.set_input_files("#query-file", str(query))
            page.wait_for_selector("#results .result img")
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
            page.screenshot(path=str(out / "search.png"), full_page=True)
            page.click("button[data-tab=maintain]")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "maintenance.png"), full_page=True)
            browser.close()
        print(f"wrote {', '.join(str(out / n) for n in ('search.png', 'train_midjob.png', 'maintenance.png'))}; query {query}")
    finally:
        server.terminate()
        server.wait(30)
        log.close()


if __name__ == "__main__":
    main()
