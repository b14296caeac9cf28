"""``SemanticHasher``: semantic hashing with a pretrained deep belief network (seed 000).

Registered as method ``dbn-ae``. ``fit`` standardises the data as the seed does (per-pixel mean
removed, divided by the global standard deviation), pretrains the RBM stack greedily, unrolls it
into a deep autoencoder, fine-tunes it, and keeps the encoder. ``encode`` rounds the sigmoid code
layer (> 0.5, the seed's rule) or, for presets with short schedules whose code units stay near
0.5, cuts each bit at its median over the training data; then packs the bits.

Training shows a progress bar with the current reconstruction error. With ``checkpoint_dir`` it
saves an Orbax checkpoint (parameters and optimiser state) after every epoch; ``resume=True``
continues from the latest one and gives the same result as an uninterrupted run with the same
seed (each epoch's PRNG key is derived from the seed, the stage and the epoch number alone).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import dbn, rbm
from .hashers import Hasher, register

__all__ = ["SemanticHasher", "PRESETS"]

# Hidden layers between the input and the code layer, and the training schedule.
PRESETS = {
    # Seed 000 exactly: CIFAR-10 3072-4096-2048-1024-512-256, 100 epochs per RBM, batch 100,
    # learning rates 0.001 (Gaussian) and 0.01 (binary), momentum 0.9; fine-tuning 150 epochs
    # at 1e-6 with momentum 0.9.
    "seed": ((4096, 2048, 1024, 512), dbn.DBNSchedule()),
    # Minutes on a 2-core CPU (MNIST protocol 1k, 32 bits: well under 10 minutes).
    # Noise before the code layer pushes the codes to 0/1, so rounding works (measured on MNIST
    # 1k: mAP@5000 .617/.655 rounded vs .608/.644 with median thresholds at 32/64 bits).
    "cpu-small": ((512, 256), dbn.DBNSchedule(rbm_epochs=8, gaussian_lr=0.001, binary_lr=0.01, finetune_epochs=12,
                                              finetune_lr=2e-5, code_noise=2.0)),
    # Seconds: for tests and notebooks. Two epochs leave code units near 0.5, so bits are cut at
    # their training medians.
    "tiny": ((64,), dbn.DBNSchedule(rbm_epochs=2, batch_size=50, finetune_epochs=2, finetune_lr=1e-4, code_threshold="median")),
}


@register("dbn-ae")
class SemanticHasher(Hasher):
    """Deep-belief-network autoencoder hasher.

    Args:
      n_bits: code layer size. preset: a key of :data:`PRESETS` (hidden sizes and schedule).
      hidden: override the preset's hidden layer sizes (tuple). layer_sizes: the whole list, input
        to code, as the seed writes it (3072-4096-2048-1024-512-256); it must start at the data's
        dimension and end at ``n_bits``. rbm_epochs, finetune_epochs,
        finetune_lr, code_noise: override the preset's schedule. checkpoint_dir / resume: see the
        module docstring. progress: show progress bars.
    """

    def __init__(self, n_bits: int = 32, seed: int = 0, preset: str = "cpu-small", hidden=None, rbm_epochs=None,
                 finetune_epochs=None, finetune_lr=None, code_noise=None, checkpoint_dir=None, resume: bool = False,
                 progress: bool = True, layer_sizes=None):
        super().__init__(n_bits, seed)
        self.preset, self.hidden, self.layer_sizes = preset, hidden, layer_sizes
        self.rbm_epochs, self.finetune_epochs, self.finetune_lr, self.code_noise = rbm_epochs, finetune_epochs, finetune_lr, code_noise
        self.checkpoint_dir, self.resume, self.progress = checkpoint_dir, resume, progress

    # -- configuration --------------------------------------------------------------------------
    def schedule(self) -> dbn.DBNSchedule:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        sched = PRESETS[self.preset][1]
        overrides = {k: getattr(self, k) for k in ("rbm_epochs", "finetune_epochs", "finetune_lr", "code_noise") if getattr(self, k) is not None}
        return sched._replace(**overrides)

    def _sizes_for(self, n_features: int) -> tuple[int, ...]:
        if self.layer_sizes is not None:
            sizes = dbn.encoder_sizes_check(self.layer_sizes, n_features)
            if sizes[-1] != int(self.n_bits):
                raise ValueError(f"layer sizes end at {sizes[-1]} but n_bits is {self.n_bits}: the last size is the code length")
            return sizes
        hidden = tuple(self.hidden) if self.hidden is not None else PRESETS.get(self.preset, PRESETS["cpu-small"])[0]
        return dbn.encoder_sizes_check((n_features,) + tuple(hidden) + (int(self.n_bits),), n_features)

    # -- training -------------------------------------------------------------------------------
    def _fit(self, x, y, rng):
        sched = self.schedule()
        sizes = self._sizes_for(x.shape[1])
        self.layer_sizes_ = sizes
        self.pixel_mean_ = x.mean(axis=0).astype(np.float32)
        self.global_std_ = np.float32(max(float((x - self.pixel_mean_).std()), 1e-8))
        data = jnp.asarray(rbm.check_rbm_data(self._standardise(x), "gaussian"))
        base = jax.random.key(int(self.seed))
        ckpt = None
        if self.checkpoint_dir is not None:
            from .checkpoint import TrainingCheckpointer  # noqa: PLC0415

            ckpt = TrainingCheckpointer(self.checkpoint_dir)
        resume_from = self._resume_point(ckpt, sizes, sched)
        self.history_ = []
        self.stage_seconds_ = {}
        stack = self._pretrain(base, data, sizes, sched, ckpt, resume_from)
        variables = self._finetune(base, data, sizes, sched, stack, ckpt, resume_from)
        for i in range(len(sizes) - 1):
            self.__dict__[f"encoder_{i}_kernel_"] = np.asarray(variables["params"][f"encoder_{i}"]["kernel"])
            self.__dict__[f"encoder_{i}_bias_"] = np.asarray(variables["params"][f"encoder_{i}"]["bias"])
        self.variables_ = variables
        self.thresholds_ = np.full(int(self.n_bits), 0.5, np.float32)
        if sched.code_threshold == "median":
            self.thresholds_ = np.median(self._code_probabilities(x), axis=0).astype(np.float32)
        elif sched.code_threshold != "round":
            raise ValueError(f"code_threshold must be 'round' or 'median', got {sched.code_threshold!r}")
        if ckpt is not None:
            ckpt.close()

    def _standardise(self, x):
        return (np.asarray(x, np.float32) - self.pixel_mean_) / self.global_std_

    def _meta(self, sizes, sched):
        return {"layer_sizes": list(sizes), "schedule": list(sched), "seed": int(self.seed)}

    def _resume_point(self, ckpt, sizes, sched):
        if ckpt is None:
            return None
        meta = ckpt.latest_meta()
        if meta is None:
            return None
        if not self.resume:
            raise FileExistsError(f"{ckpt.directory} already holds checkpoints: pass resume=True (--resume) to continue, "
                                  "or choose an empty folder")
        expected = self._meta(sizes, sched)
        if meta.get("run") != expected:
            from .checkpoint import CheckpointMismatchError  # noqa: PLC0415

            raise CheckpointMismatchError(f"checkpoints in {ckpt.directory} were written for {meta.get('run')}, not {expected}: "
                                          "another architecture or schedule; use another checkpoint folder")
        return meta

    def _bar(self, total, desc):
        from .progress import progress  # noqa: PLC0415

        return progress(total=total, desc=desc, unit="epoch", disable=not self.progress, leave=False)

    def _pretrain(self, base, data, sizes, sched, ckpt, resume_from):
        """Greedy layer-wise RBM training; returns the stack (None when resuming into fine-tuning)."""
        n_layers = len(sizes) - 1
        if resume_from is not None and resume_from["stage"] == "finetune":
            return None
        stack, restored_state, start_layer, start_epoch = [], None, 0, 0
        if resume_from is not None:
            restored = ckpt.restore(resume_from["step"], self._template_at(resume_from, sizes, sched))
            stack, restored_state = list(restored["stack"]), restored["state"]
            start_layer, start_epoch = resume_from["stage_index"], resume_from["epoch"] + 1
        layer_input = data
        for params in stack:  # recompute the finished layers' outputs (deterministic)
            layer_input = dbn.hidden_features(params, layer_input)
        for layer in range(start_layer, n_layers):
            visible = "gaussian" if layer == 0 else "bernoulli"
            opt = self._rbm_optimizer(sched, visible)
            layer_key = jax.random.fold_in(base, layer + 1)
            if layer == start_layer and restored_state is not None:
                state, start = restored_state, start_epoch
            else:
                init_key = jax.random.fold_in(layer_key, 10**6)
                state, start = rbm.init_train_state(init_key, rbm.init_rbm(init_key, sizes[layer], sizes[layer + 1]), opt), 0
            bar = self._bar(sched.rbm_epochs, f"RBM {layer + 1}/{n_layers} {sizes[layer]}-{sizes[layer + 1]} ({visible})")
            bar.update(start)
            t0 = time.perf_counter()
            for epoch in range(start, sched.rbm_epochs):
                state, err = rbm.train_epoch(jax.random.fold_in(layer_key, epoch), state, layer_input, opt,
                                             batch_size=sched.batch_size, k=sched.cd_k, visible=visible)
                err = float(err)
                if not np.isfinite(err):
                    raise FloatingPointError(f"RBM {layer + 1} diverged at epoch {epoch + 1} (reconstruction error {err}); lower its learning rate")
                self.history_.append({"stage": f"rbm{layer + 1}", "epoch": epoch + 1, "reconstruction_error": err})
                bar.set_postfix(recon=f"{err:.4f}")
                bar.update(1)
                if ckpt is not None:
                    ckpt.save(self._step(sched, layer, epoch), {"stack": list(stack), "state": state},
                              {"run": self._meta(sizes, sched), "stage": "rbm", "stage_index": layer, "epoch": epoch})
            bar.close()
            self.stage_seconds_[f"rbm{layer + 1}"] = round(time.perf_counter() - t0, 2)
            stack.append(state.params)
            layer_input = dbn.hidden_features(state.params, layer_input)
        return stack

    @staticmethod
    def _rbm_optimizer(sched, visible):
        lr = sched.gaussian_lr if visible == "gaussian" else sched.binary_lr
        return rbm.rbm_optimizer(lr, sched.momentum, sched.weight_decay)

    @staticmethod
    def _finetune_optimizer(sched):
        return optax.sgd(sched.finetune_lr, momentum=sched.finetune_momentum)

    def _template_at(self, meta, sizes, sched):
        """Structure of the checkpoint written at ``meta`` (for restoring into)."""
        key = jax.random.key(0)
        if meta["stage"] == "rbm":
            layer = meta["stage_index"]
            opt = self._rbm_optimizer(sched, "gaussian" if layer == 0 else "bernoulli")
            state = rbm.init_train_state(key, rbm.init_rbm(key, sizes[layer], sizes[layer + 1]), opt)
            return {"stack": stack_templates(sizes, layer), "state": state}
        variables = dbn.unroll(stack_templates(sizes, len(sizes) - 1))
        return {"variables": variables, "opt_state": self._finetune_optimizer(sched).init(variables["params"])}

    @staticmethod
    def _step(sched, stage_index, epoch):
        return stage_index * max(sched.rbm_epochs, sched.finetune_epochs) + epoch

    def _finetune(self, base, data, sizes, sched, stack, ckpt, resume_from):
        n_layers = len(sizes) - 1
        model = dbn.DeepAutoencoder(sizes)
        opt = self._finetune_optimizer(sched)
        if resume_from is not None and resume_from["stage"] == "finetune":
            restored = ckpt.restore(resume_from["step"], self._template_at(resume_from, sizes, sched))
            variables, opt_state, start = restored["variables"], restored["opt_state"], resume_from["epoch"] + 1
        else:
            variables = dbn.unroll(stack)
            opt_state, start = opt.init(variables["params"]), 0
        ft_key = jax.random.fold_in(base, 1000)
        bar = self._bar(sched.finetune_epochs, f"fine-tuning {'-'.join(map(str, sizes))}")
        bar.update(start)
        t0 = time.perf_counter()
        for epoch in range(start, sched.finetune_epochs):
            variables, opt_state, err = dbn.finetune_epoch(jax.random.fold_in(ft_key, epoch), variables, opt_state, data, model, opt,
                                                           sched.batch_size, float(sched.code_noise))
            err = float(err)
            if not np.isfinite(err):
                raise FloatingPointError(f"fine-tuning diverged at epoch {epoch + 1}; lower finetune_lr")
            self.history_.append({"stage": "finetune", "epoch": epoch + 1, "reconstruction_error": err})
            bar.set_postfix(recon=f"{err:.4f}")
            bar.update(1)
            if ckpt is not None:
                ckpt.save(self._step(sched, n_layers, epoch), {"variables": variables, "opt_state": opt_state},
                          {"run": self._meta(sizes, sched), "stage": "finetune", "stage_index": n_layers, "epoch": epoch})
        bar.close()
        self.stage_seconds_["finetune"] = round(time.perf_counter() - t0, 2)
        return variables

    # -- encoding -------------------------------------------------------------------------------
    def _encoder_params(self):
        n = len(self.layer_sizes_) - 1
        return [(jnp.asarray(getattr(self, f"encoder_{i}_kernel_")), jnp.asarray(getattr(self, f"encoder_{i}_bias_"))) for i in range(n)]

    def code_probabilities(self, x) -> np.ndarray:
        """Sigmoid code-layer activations ``(n, n_bits)`` float32 of raw (unstandardised) features."""
        return self._code_probabilities(self._check_x(x, fitting=False))

    def _code_probabilities(self, x) -> np.ndarray:
        h = jnp.asarray(self._standardise(x))
        for kernel, bias in self._encoder_params():
            h = jax.nn.sigmoid(h @ kernel + bias)
        return np.asarray(h)

    def _project(self, x):
        # The base class's encode packs ``_project(x) > 0``, i.e. probabilities above the thresholds.
        return self._code_probabilities(x) - self.thresholds_

    def reconstruct(self, x) -> np.ndarray:
        """Autoencoder reconstructions of raw features (needs the fitted model, not a loaded one)."""
        if not hasattr(self, "variables_"):
            raise ValueError("reconstruction needs the decoder, which is not saved: use the hasher returned by fit")
        model = dbn.DeepAutoencoder(tuple(self.layer_sizes_))
        out = model.apply(self.variables_, jnp.asarray(self._standardise(self._check_x(x, fitting=False))))
        return np.asarray(out) * self.global_std_ + self.pixel_mean_

    def _learned(self) -> dict:
        learned = super()._learned()
        for transient in ("variables_", "history_", "stage_seconds_"):
            learned.pop(transient, None)
        learned["layer_sizes_"] = tuple(int(s) for s in self.layer_sizes_)
        learned["global_std_"] = float(self.global_std_)
        return learned


def stack_templates(sizes, n):
    """RBM parameter templates for the first ``n`` layers (shapes only matter)."""
    key = jax.random.key(0)
    return [rbm.init_rbm(key, sizes[i], sizes[i + 1]) for i in range(n)]

