import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from jaxhash.cli import main


def test_benchmark_table_and_json(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--data", "digits", "--protocol", "200", "--methods", "lsh,itq",
                 "--bits", "8,16", "--metric", "map@all,p@10", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "map@all" in text and "itq" in text
    records = json.loads(out.read_text())
    assert len(records) == 2 * 2 * 2
    assert {r["method"] for r in records} == {"lsh", "itq"} and {r["bits"] for r in records} == {8, 16}
    for r in records:
        assert 0.0 <= r["value"] <= 1.0 and r["fit_seconds"] >= 0 and r["metric"] in ("map@all", "p@10")


def make_folder(root, rng):
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    for split in ("train", "test"):
        for name, colour in colours.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(6):
                noise = rng.integers(-25, 25, (12, 12, 3))
                img = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    (root / "train" / "red" / "corrupt.png").write_bytes(b"garbage")


def test_fit_index_search_round_trip(tmp_path, rng, capsys):
    folder = tmp_path / "photos"
    make_folder(folder, rng)
    model, index, grid = tmp_path / "model", tmp_path / "photos.jhx", tmp_path / "grid.png"
    with pytest.warns(UserWarning, match="corrupt.png"):
        assert main(["fit", "--data", str(folder), "--protocol", "official", "--method", "pcah", "--bits", "2", "--out", str(model)]) == 0
    with pytest.warns(UserWarning, match="corrupt.png"):
        assert main(["index", "--model", str(model), "--folder", str(folder), "--out", str(index)]) == 0
    query = folder / "test" / "blue" / "3.png"
    assert main(["search", "--model", str(model), "--index", str(index), str(query), "--k", "4",
                 "--grid", str(grid), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "query " + str(query) in text
    results = json.loads((tmp_path / "r.json").read_text())[0]["results"]
    # Two principal directions separate the three colours: every hit is a blue patch at distance 0.
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert all("/blue/" in r["path"] and r["distance"] == 0 for r in results)
    with Image.open(grid) as img:
        assert img.size[0] > 4 * 96 and img.size[1] >= 96


def test_errors_are_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAXHASH_DATA", raising=False)
    assert main(["search", "--model", str(tmp_path / "nope"), "--index", "x.jhx", "q.png"]) == 2
    assert "train one with  jaxhash fit" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(tmp_path / "missing"), "--methods", "lsh"]) == 2
    assert "neither a known data set" in capsys.readouterr().err
    assert main(["benchmark", "--data", "digits", "--methods", "nosuch"]) == 2
    assert "unknown hashing method" in capsys.readouterr().err


def test_fit_dbn_with_checkpoints_and_resume(tmp_path, capsys):
    pytest.importorskip("sklearn")
    common = ["fit", "--data", "digits", "--protocol", "200", "--method", "dbn-ae", "--bits", "8", "--preset", "tiny",
              "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "model")]
    assert main(common) == 0
    assert main(common) == 2  # checkpoints exist: refuse to overwrite without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(common + ["--resume"]) == 0
    assert main(["fit", "--data", "digits", "--method", "itq", "--bits", "8", "--preset", "tiny", "--out", str(tmp_path / "m2")]) == 2
    assert "takes no --preset" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "jaxhash.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "benchmark" in result.stdout


def test_bench_search_script_runs_and_matches_faiss(tmp_path):
    pytest.importorskip("faiss")
    out = tmp_path / "b.json"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_search.py"), "--n", "20000", "--queries", "64",
                             "--bits", "64", "--repeats", "1", "--json", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(out.read_text())
    assert record["same_distances_as_faiss"] and record["ratio_faiss_over_jaxhash"] > 0
    assert "ratio faiss/jaxhash" in result.stdout
