import numpy as np
import pytest

import jaxhash
from jaxhash import dbn, rbm, semantic
from jaxhash.checkpoint import CheckpointMismatchError

SMALL = dict(n_bits=8, preset="tiny", hidden=(12, 10), rbm_epochs=3, finetune_epochs=3, progress=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = rng.random((4, 20))
    labels = rng.integers(0, 4, 400)
    return np.clip(centres[labels] + 0.1 * rng.normal(size=(400, 20)), 0, 1).astype(np.float32), labels


@pytest.fixture(scope="module")
def reference(data):
    return jaxhash.SemanticHasher(**SMALL).fit(data[0])


def test_registered_and_encodes(reference, data):
    assert isinstance(jaxhash.make_hasher("dbn-ae", n_bits=8), jaxhash.SemanticHasher)
    codes = reference.encode(data[0])
    assert codes.dtype == np.uint32 and codes.shape == (400, 1) and (codes >> 8 == 0).all()
    stages = [h["stage"] for h in reference.history_]
    assert stages == ["rbm1"] * 3 + ["rbm2"] * 3 + ["rbm3"] * 3 + ["finetune"] * 3
    assert reference.layer_sizes_ == (20, 12, 10, 8)


def test_save_load_round_trip(reference, data, tmp_path):
    reference.save(tmp_path / "h")
    again = jaxhash.load_hasher(tmp_path / "h")
    np.testing.assert_array_equal(again.encode(data[0]), reference.encode(data[0]))


@pytest.mark.parametrize("crash_after", [2, 3, 7])  # inside RBM 1, at a layer boundary, inside fine-tuning
def test_resumed_run_equals_uninterrupted_run(reference, data, tmp_path, monkeypatch, crash_after):
    calls = {"n": 0}
    real_rbm, real_ft = rbm.train_epoch, dbn.finetune_epoch

    def crashing(fn):
        def wrapped(*args, **kwargs):
            if calls["n"] == crash_after:
                raise KeyboardInterrupt("simulated crash")
            calls["n"] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(semantic.rbm, "train_epoch", crashing(real_rbm))
    monkeypatch.setattr(semantic.dbn, "finetune_epoch", crashing(real_ft))
    with pytest.raises(KeyboardInterrupt):
        jaxhash.SemanticHasher(checkpoint_dir=tmp_path / "ck", **SMALL).fit(data[0])
    monkeypatch.setattr(semantic.rbm, "train_epoch", real_rbm)
    monkeypatch.setattr(semantic.dbn, "finetune_epoch", real_ft)
    with pytest.raises(FileExistsError, match="resume"):
        jaxhash.SemanticHasher(checkpoint_dir=tmp_path / "ck", **SMALL).fit(data[0])
    resumed = jaxhash.SemanticHasher(checkpoint_dir=tmp_path / "ck", resume=True, **SMALL).fit(data[0])
    for name in vars(reference):
        if name.startswith("encoder_"):
            np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name))


def test_checkpoint_from_another_architecture_is_refused(data, tmp_path):
    jaxhash.SemanticHasher(checkpoint_dir=tmp_path / "ck", **dict(SMALL, finetune_epochs=1)).fit(data[0])
    with pytest.raises(CheckpointMismatchError, match="another architecture"):
        jaxhash.SemanticHasher(checkpoint_dir=tmp_path / "ck", resume=True, **dict(SMALL, hidden=(14, 10))).fit(data[0])


def test_bad_input(data):
    bad = data[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        jaxhash.SemanticHasher(**SMALL).fit(bad)
    with pytest.raises(ValueError, match="data have 20 features"):
        jaxhash.SemanticHasher(n_bits=8, preset="tiny", layer_sizes=(3072, 64, 8)).fit(data[0])
    with pytest.raises(ValueError, match="code length"):
        jaxhash.SemanticHasher(n_bits=8, preset="tiny", layer_sizes=(20, 64, 16)).fit(data[0])
    with pytest.raises(ValueError, match="unknown preset"):
        jaxhash.SemanticHasher(n_bits=8, preset="huge").fit(data[0])
    with pytest.raises(FloatingPointError, match="lower"):
        jaxhash.SemanticHasher(**dict(SMALL, finetune_lr=1e4)).fit(data[0] * 1e3)


def test_codes_group_similar_inputs(reference, data):
    x, labels = data
    codes = reference.encode(x)
    assert jaxhash.mean_average_precision(codes, labels, codes, labels) > 0.3  # 4 classes: chance ~0.25


def test_after_a_divergence_a_lower_rate_resumes_from_the_last_good_checkpoint(data, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(FloatingPointError, match="lower finetune_lr and resume"):
        jaxhash.SemanticHasher(checkpoint_dir=ck, **dict(SMALL, finetune_lr=1e4)).fit(data[0] * 1e3)
    with pytest.raises(CheckpointMismatchError, match="data:"):  # the same checkpoints, other data: refused
        jaxhash.SemanticHasher(checkpoint_dir=ck, resume=True, **SMALL).fit(data[0])
    saved = sorted(p.name for p in ck.iterdir())
    assert saved == ["finetune", "rbm1", "rbm2", "rbm3"] or saved == ["rbm1", "rbm2", "rbm3"]
    good = jaxhash.SemanticHasher(checkpoint_dir=ck, resume=True, **dict(SMALL, finetune_lr=1e-9)).fit(data[0] * 1e3)
    assert [h["stage"] for h in good.history_] == ["finetune"] * 3  # the RBMs came from their checkpoints


def test_refit_preset_alias_small_data_and_old_checkpoints(reference, data, tmp_path):
    h = jaxhash.SemanticHasher(**SMALL).fit(data[0])
    h.hidden = (12,)
    h.fit(data[0])
    assert h.layer_sizes_ == (20, 12, 8) and not hasattr(h, "encoder_2_kernel_")  # no layer of the first fit is left
    assert jaxhash.SemanticHasher(n_bits=8, preset="seed").schedule() == jaxhash.SemanticHasher(n_bits=8, preset="paper").schedule()
    with pytest.raises(ValueError, match="fewer than one mini-batch of 50 .*batch_size="):
        jaxhash.SemanticHasher(**SMALL).fit(data[0][:30])
    assert jaxhash.SemanticHasher(**dict(SMALL, batch_size=10)).fit(data[0][:30]).is_fitted
    (tmp_path / "old" / "7").mkdir(parents=True)  # jaxhash 0.1 kept every stage's steps in one folder
    with pytest.raises(CheckpointMismatchError, match="jaxhash 0.1"):
        jaxhash.SemanticHasher(checkpoint_dir=tmp_path / "old", resume=True, **SMALL).fit(data[0])


def test_a_small_training_set_gets_more_epochs_of_the_cpu_small_preset_with_one_note(monkeypatch):
    preset = semantic.PRESETS["cpu-small"][1]
    assert dbn.fit_schedule_to_data(preset, 69_000) == preset  # MNIST's database keeps the preset's 8 and 12 epochs
    small = dbn.fit_schedule_to_data(preset, 797)
    assert (small.rbm_epochs, small.finetune_epochs) == (314, 314)  # 250,000 images seen per stage
    assert dbn.fit_schedule_to_data(preset, 797, rbm_epochs_given=True).rbm_epochs == 8  # what was asked for stays
    assert dbn.fit_schedule_to_data(semantic.PRESETS["paper"][1], 797) == semantic.PRESETS["paper"][1]  # the published setting

    class Trained(Exception):
        pass

    def capture(key, data, sizes, schedule, **kwargs):
        raise Trained(schedule)

    monkeypatch.setattr(dbn, "train_dbn", capture)
    x = np.random.default_rng(0).random((797, 16), dtype=np.float32)
    with pytest.warns(UserWarning, match=r"dbn-ae: 797 training images, so 314 epochs per RBM and 314 of fine-tuning \(the "
                                         r"preset's minimum of 250,000 images seen per stage"), pytest.raises(Trained) as trained:
        jaxhash.SemanticHasher(n_bits=8, preset="cpu-small", progress=False).fit(x)
    assert trained.value.args[0].rbm_epochs == 314
    with pytest.raises(Trained) as trained:
        jaxhash.SemanticHasher(n_bits=8, preset="cpu-small", progress=False, rbm_epochs=8, finetune_epochs=12).fit(x)
    assert trained.value.args[0] == preset._replace(rbm_epochs=8, finetune_epochs=12)  # given: no note, no change
