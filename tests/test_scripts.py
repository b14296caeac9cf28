"""The scripts under scripts/ run end to end on tiny data (they print measured figures; no timings are asserted)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_script(name, *args, tmp_path):
    env = {**os.environ, "JAXHASH_PROGRESS": "0", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_bench_search_script_runs_and_matches_faiss(tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "b.json"
    stdout = run_script("bench_search.py", "--n", "20000", "--queries", "64", "--bits", "64", "--repeats", "1", "--json", str(out),
                        tmp_path=tmp_path)
    (record,) = json.loads(out.read_text())
    assert record["same_distances_as_faiss"] and record["ratio_faiss_over_jaxhash"] > 0
    assert "ratio faiss/jaxhash" in stdout


def test_semantic_hashing_script_on_the_training_loop(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "r.json"
    stdout = run_script("semantic_hashing.py", "--data", "digits", "--protocol", "200", "--preset", "tiny", "--bits", "8",
                        "--out", str(tmp_path / "fig"), "--json", str(out), tmp_path=tmp_path)
    record = json.loads(out.read_text())
    assert [h["stage"] for h in record["history"]] == ["rbm1"] * 2 + ["rbm2"] * 2 + ["finetune"] * 2
    assert set(record["stage_seconds"]) == {"rbm1", "rbm2", "finetune"} and 0 <= record["value"] <= 1
    assert "layers 64-64-8" in stdout
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"reconstructions.png", "nearest.png", "same_class_vs_distance.png"}


def test_bench_rbm_script(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "r.json"
    stdout = run_script("bench_rbm.py", "--data", "digits", "--n", "600", "--hidden", "16", "--repeats", "1", "--quality-epochs", "1",
                        "--json", str(out), tmp_path=tmp_path)
    record = json.loads(out.read_text())
    assert record["n"] == 600 and record["ratio_sklearn_over_jaxhash"] > 0 and "ratio sklearn/jaxhash" in stdout


def test_bench_vae_script_times_the_training_step(tmp_path):
    out = tmp_path / "v.json"
    stdout = run_script("bench_vae.py", "--size", "32", "--preset", "tiny", "--steps", "2", "--repeats", "2", "--json", str(out),
                        tmp_path=tmp_path)
    record = json.loads(out.read_text())
    assert record["shape"] == [32, 32, 3] and record["batch_size"] == 32 and len(record["run_seconds"]) == 2
    assert record["images_per_second"] > 0 and "images/s" in stdout and "154,644 images" in stdout


def test_bench_scale_script_prints_identical_results_side_by_side(tmp_path):
    pytest.importorskip("sklearn")  # the real codes come from the 8x8 digits without --data-dir
    out = tmp_path / "s.json"
    parts = "mih,sharded,pca,device" + (",faiss" if importlib.util.find_spec("faiss") else "")
    stdout = run_script("bench_scale.py", "--n", "5000", "--faiss-n", "3000", "--device-n", "3000", "--queries", "30",
                        "--repeats", "1", "--parts", parts, "--json", str(out), tmp_path=tmp_path)
    records = json.loads(out.read_text())
    assert {r["part"] for r in records} == set(parts.split(","))
    assert all(r["same_distances_as_faiss"] and r["same_ids_as_faiss"] for r in records if r["part"] == "faiss")
    (device,) = [r for r in records if r["part"] == "device"]
    assert device["exact_on_checked_queries"] and device["n"] == 3000 and device["int8_ops_per_s"] > 0
    assert "no accelerator here" in stdout  # CPU figures are not passed off as the GPU's
    assert all(r["identical"] for r in records if r["part"] in ("mih", "sharded"))
    assert [r["devices"] for r in records if r["part"] == "sharded"] == [4]
    assert "speed-up" in stdout and "ITQ on 1,000 x 12,288" in stdout


def test_vae_clustering_script_scores_and_draws(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "v.json"
    stdout = run_script("vae_clustering.py", "--data", "digits", "--preset", "tiny", "--epochs", "2", "--ae-epochs", "2",
                        "--limit", "400", "--reductions", "pca,tsne", "--umap-dims", "0", "--out", str(tmp_path / "fig"), "--json", str(out),
                        tmp_path=tmp_path)
    record = json.loads(out.read_text())
    rows = {(r["features"], r["reduction"]) for r in record["records"]}
    assert rows == {("pixels", "-"), ("pixels", "pca50")} | {(m, r) for m in ("vae", "sparse-ae", "ae") for r in ("-", "pca", "tsne")}
    assert all(0 <= r["accuracy"] <= 1 for r in record["records"]) and "most similar" in stdout
    assert "ae (preset n2d): trained" in stdout  # N2D's fully connected autoencoder
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"latent_by_class.png", "latent_by_class_sparse_ae.png",
                                                              "latent_by_class_ae.png", "latent_by_cluster.png",
                                                              "reconstructions.png", "nearest.png"}


def test_vae_clustering_script_refuses_bad_values_in_one_line_before_training(tmp_path):
    script = [sys.executable, str(REPO / "scripts" / "vae_clustering.py"), "--data", "digits", "--out", str(tmp_path / "fig")]
    for bad, said in ((["--reductions", "pca,lda"], "--reductions takes pca, tsne and umap"),
                      (["--m", "0"], "argument --m: expected a positive integer"),
                      (["--embed-limit", "3"], "--embed-limit 3 leaves too few points to embed and cluster "
                                                  "into 10 clusters: use at least 10")):
        result = subprocess.run(script + bad, capture_output=True, text=True, cwd=tmp_path,
                                env={**os.environ, "JAXHASH_PROGRESS": "0"})
        assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert result.stdout == ""  # nothing trained or scored first


def test_bench_serve_script_measures_latency_over_http(tmp_path):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    for c, name in enumerate(("cats", "dogs")):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 120, size=(24 + i % 5, 30, 3)) + 100 * c
            Image.fromarray(pixels.astype("uint8")).save(tmp_path / "photos" / name / f"{i}.jpg")
    out = tmp_path / "serve.json"
    stdout = run_script("bench_serve.py", "--photos", str(tmp_path / "photos"), "--preset", "tiny", "--bits", "16",
                        "--codes", "5000", "--queries", "40", "--clients", "4", "--k", "5", "--json", str(out), tmp_path=tmp_path)
    record = json.loads(out.read_text())
    assert record["failed"] == 0 and record["codes"] == 5000 and record["p99_ms"] >= record["p50_ms"] > 0
    assert record["build_images_per_s"] > 0 and "index build: 80 images" in stdout


@pytest.mark.parametrize("script, bad, said", [
    ("hamming_letters.py", ["--trials", "0"], "argument --trials: expected a positive integer"),
    ("hamming_letters.py", ["--noise", "0,1.5"], "argument --noise: expected a number from 0 to 1, got '1.5'"),
    ("dbn_variants.py", ["--only", "5"], "--only takes variant numbers from 0 to 2"),
    ("bench_scale.py", ["--parts", "mih,foo"], "--parts takes faiss, mih, sharded, cold, pca, device"),
    ("semantic_hashing.py", ["--resume"], "--checkpoint-dir DIR --resume"),
    ("photo_folder.py", ["no-such-folder"], "No such file or directory: no-such-folder"),
    ("photo_folder.py", [".", "--queries", "5"], "holds 0 class folders: it needs one sub-folder of photos per class"),
    ("hamming_classifier.py", ["--data", "no-such-set"], "'no-such-set' is neither a known data set"),
    ("bench_search.py", ["--json", "."], "argument --json: . is a folder: give a file name, e.g. results.json"),
    ("bench_vae.py", ["--preset", "n2d"], "--preset takes tiny, cpu or gpu (the convolutional presets), not 'n2d'"),
    ("bench_vae.py", ["--size", "4"], "need at least 5x5, got 4x4"),
    ("vae_retrieval.py", ["--json", str(REPO / "README.md" / "r.json")], "README.md is a file, not a folder"),
])
def test_scripts_refuse_bad_values_in_one_line(tmp_path, script, bad, said):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / script), *bad], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "JAXHASH_PROGRESS": "0"})
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr
