"""The diffusion trainer: a DDPM training loop a student can leave running overnight and trust.

One optimiser step (Ho et al. 2020, Algorithm 1): draw x0 from the data, t ~ U{0..T-1} and eps ~
N(0, I); form x_t = q_sample(x0, t, eps); regress the network output on the target (eps, x0 or
v). The loss and the sample grids are the run's
:class:`~oasis_lib.diffusion.DiffusionPipeline`'s (``pipeline.loss``, ``pipeline.sample``);
validation uses fixed slices, fixed timesteps and fixed noise, so the number is comparable
between epochs; the grid is drawn by the EMA model from fixed seed noise.

Conditional runs (``config.condition``, issue 12) read named batches ``{"image", "mask",
"slice_index", ...}``, one key per condition field of the run
(:class:`~oasis_lib.data.conditional.ConditionalSlices`, each field's column read by the field;
latent runs keep the pixel masks and indices next to the cached latents, and the U-Net pools the
mask to the latent grid). Each step builds the batch's
:class:`~oasis_lib.models.conditioning.Condition` by field name, then draws each field's
augmentation (the mask's per-class ablation) and condition dropout for each image. Those draws,
like the flip, t and the noise, are keyed by (seed, step, the image's slot in the global batch)
(:mod:`.draws`), so a resumed run is exact and N ranks draw what one process draws. Validation
and the grids use the fixed validate slices' own masks and indices, complete (no ablation, no
dropout; guidance scale 1). Everything around the step (optimiser, EMA, checkpoints, exact
resume, budget, signals, DDP) is the shared :class:`~oasis_lib.training.loop.TrainingLoop`.

A reflow run (``config.reflow_pairs``, Liu et al. 2022 sec. 3; :mod:`.reflow`) reads a
teacher's pairs instead of the slices: items ``{"image": sample, "noise": noise}``, the loss the
same with the pair's noise as eps (t still keyed per image); validation on the held-out last
shard with its own noise; the run's model space is the teacher's (``reflow.check_reflow_run``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from ..config import EXTERNAL_ARCH, TrainConfig
from ..data.conditional import ConditionalSlices, NamedTensors, condition_tensors
from ..models.conditioning import Condition, parse_condition, training_condition
from ..models.factory import build_pipeline
from ..pretrained_autoencoder import autoencoder_sha256, load_autoencoder, run_autoencoder
from ..seeding import cpu_generator
from .distributed import destroy
from .init_from import read_init_source, resolve_init_config, warm_start_state
from .loop import RESUME_OVERRIDES, NonFiniteLossError, TrainingLoop, TrainResult, _images
from .reflow import check_reflow_run, reflow_datasets

__all__ = ["RESUME_OVERRIDES", "NonFiniteLossError", "TrainResult", "Trainer", "train"]


class Trainer(TrainingLoop):
    """Train the diffusion model ``config`` describes: ``Trainer(cfg).fit()``.

    ``model``: a network of the caller's own, called as ``model(x, t) -> prediction`` (x
    ``[B, 1, H, W]``, t long ``[B]``), for ``config.arch == "external"`` (and only then): the
    loop around it (optimiser, EMA, budget, checkpoints, exact resume, DDP) is the same. A
    resume passes a freshly built network of the same layout; the checkpoint's weights are
    loaded into it."""

    def __init__(self, config: TrainConfig, *, model: torch.nn.Module | None = None, **kwargs):
        if model is None and config.arch == EXTERNAL_ARCH:
            raise ValueError("arch 'external' trains the caller's network: pass it, "
                             "Trainer(config, model=net)")
        if model is not None and config.arch != EXTERNAL_ARCH:
            raise ValueError(f"model= is for arch 'external'; arch {config.arch!r} builds its "
                             "own network (set arch='external' to train the one passed)")
        self._external_model = model
        if config.reflow_pairs is not None and any(
                kwargs.get(k) is not None for k in ("train_set", "val_set")):
            raise ValueError("a reflow run reads its pairs (reflow_pairs); pass no train_set "
                             "or val_set")
        # A resume keeps the run's own weights: init_from is not re-applied (build).
        self.resuming = bool(kwargs.get("resume", False))
        super().__init__(config, **kwargs)

    @property
    def conditional(self) -> bool:
        return self.cfg.condition != "none"

    @property
    def reflow(self) -> bool:
        """Training on a teacher's (noise, sample) pairs (``config.reflow_pairs``)."""
        return self.cfg.reflow_pairs is not None

    @property
    def needs_masks(self) -> bool:  # read by the loop when it loads the data
        return self.conditional

    @property
    def fields(self) -> tuple:
        """The run's condition fields (``config.condition`` parsed by the registry)."""
        return parse_condition(self.cfg.condition)

    # ------------------------------------------------------------------ what is trained
    def build(self) -> torch.nn.Module:
        """The network to optimise (here: the diffusion pipeline's), before moving it; a fresh
        run with ``init_from`` starts from that file's weights (:mod:`.init_from`), so the EMA
        copy made next does too."""
        source = None
        if self.cfg.init_from is not None and not self.resuming:
            source = read_init_source(self.cfg.init_from)
            resolve_init_config(self.cfg, source)  # a latent file's autoencoder, scale factor
        self.pipeline = build_pipeline(self.cfg, model=self._external_model,
                                       autoencoder=self._run_autoencoder())
        if source is not None:
            warm_start_state(self.pipeline.model, source.state, source=str(source.path))
        if self.reflow:  # the teacher's model space: its autoencoder and scale factor
            check_reflow_run(self.cfg, self.pipeline, self.reflow_manifest,
                             directory=self.cfg.reflow_pairs)
        self.schedule = self.pipeline.schedule
        self._slice_sets = (self.train_set, self.val_set)  # before a latent run replaces them
        return self.pipeline.model

    def _run_autoencoder(self):
        """A latent run's autoencoder, carried by content: a fresh run stores its hash
        (``autoencoder_sha256``); a resume loads the one with that hash or refuses
        (:func:`oasis_lib.pretrained_autoencoder.run_autoencoder`), so it never re-encodes the
        data with another autoencoder under the old scale factor."""
        c = self.cfg
        if c.autoencoder is None:
            return None
        if self.resuming:
            return run_autoencoder(c, run_path=Path(c.out_dir) / "last.pt",
                                   override=c.autoencoder, device="cpu")[0]
        autoencoder = load_autoencoder(c.autoencoder, device="cpu")
        c.autoencoder_sha256 = autoencoder_sha256(autoencoder)
        return autoencoder

    def load_data(self, cfg: TrainConfig):
        """The slices, or a reflow run's pairs (the last shard held out: :mod:`.reflow`)."""
        if cfg.reflow_pairs is None:
            return super().load_data(cfg)
        train, val, self.reflow_manifest = reflow_datasets(cfg.reflow_pairs)
        return train, val

    def encoded_sets(self):
        """A latent run's model-space data: the cached latents of the slices, or the pairs
        as they are (already in the teacher's model space)."""
        if self.reflow:
            self.pipeline.to(self.device)
            return self.train_set, self.val_set
        return super().encoded_sets()

    def step_inputs(self, batch):
        """Images (or latents), and for a conditional run the values of its fields, in the
        order of :attr:`fields` (the loop flips the >= 3-d ones with the images); a reflow
        run's samples and their noise."""
        if self.reflow:
            return batch["image"], batch["noise"]
        if not self.conditional:
            return _images(batch)
        return (batch["image"], *(batch[f.key] for f in self.fields))

    def condition_of(self, *values: torch.Tensor) -> Condition:
        """The complete Condition of a batch: the values of the run's fields, in order."""
        return Condition(**{f.key: f.collate(v) for f, v in zip(self.fields, values,
                                                                   strict=True)})

    def compute_loss(self, x0: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (on the device): each image's t (the noise process's
        draw from a keyed uniform: VP t ~ U{0..T-1}) and noise come from ``self.draws`` (keyed
        per image, :mod:`.draws`); a reflow batch brings its noise (the pairs'); a conditional
        batch's condition is ablated and dropped out first (module docstring)."""
        cond, n = None, x0.shape[0]
        if self.conditional:
            cond = self.keyed_condition(self.condition_of(*extra)).to(self.device)
        t = self.pipeline.process.time_from_uniform(self.draws.uniform(n, "timestep"))
        if self.reflow:
            noise = extra[0].to(x0.device, x0.dtype)
        else:
            noise = self.draws.normal(x0.shape)
        return self.pipeline.loss(x0, model=self.model, t=t, noise=noise,
                                  encoded=self.encoded, condition=cond)

    def keyed_condition(self, cond: Condition) -> Condition:
        """The training condition (class ablation, then condition dropout:
        :func:`~oasis_lib.models.conditioning.training_condition`) drawn image by image, each
        from its own keyed generator (stream "condition")."""
        c = self.cfg
        if cond.batch_size is None:
            return cond
        gens = self.draws.generators(cond.batch_size, "condition")
        return Condition.cat([
            training_condition(cond.select(slice(i, i + 1)), ablation_p=c.mask_ablation_p,
                               p_uncond=c.p_uncond, mode=c.condition_dropout, generator=g)
            for i, g in enumerate(gens)])

    def _conditional_sets(self) -> None:
        """Named datasets ``{"image": slice or latent, <field key>: value, ...}`` for a
        conditional run (each field's column read by the field)."""
        train, val = self._slice_sets
        columns = {f.key: f.read for f in self.fields}
        if not self.encoded:
            self.train_set, self.val_set = (ConditionalSlices(d, columns) for d in (train, val))
            return
        self.train_set, self.val_set = (
            NamedTensors(image=latents.tensors[0], **condition_tensors(raw, columns))
            for latents, raw in ((self.train_set, train), (self.val_set, val)))

    def _fixed_validation_batch(self) -> None:
        """Fixed validate slices (spread over all cases), timesteps and noise
        (the noise process's ``validation_draws``), and their conditions; a reflow run's
        held-out pairs with their own noise."""
        if self.conditional:
            self._conditional_sets()
        n = min(self.cfg.val_size, len(self.val_set))
        idx = torch.linspace(0, len(self.val_set) - 1, n).round().long().tolist()
        items = [self.val_set[i] for i in idx]
        self.val_cond = None
        if self.conditional:
            self.val_cond = self.condition_of(*([it[f.key] for it in items] for f in self.fields))
            items = [item["image"] for item in items]
        pair_noise = None
        if self.reflow:
            pair_noise = torch.stack([item["noise"] for item in items])
            items = [item["image"] for item in items]
        self.val_x0 = torch.stack([_images(item) for item in items])
        self.val_t, self.val_noise = self.pipeline.process.validation_draws(
            (n, *self.pipeline.sample_shape), seed=self.cfg.seed + 1)
        if pair_noise is not None:
            self.val_noise = pair_noise

    def _val_condition(self, index) -> Condition | None:
        return None if self.val_cond is None else self.val_cond.select(index).to(self.device)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation loss of the live and EMA weights on the fixed batch."""
        out = {}
        for name, net in (("val_loss", self.eval_model), ("val_loss_ema", self.ema.model)):
            was_training = net.training
            net.eval()
            total = 0.0
            for i in range(0, len(self.val_x0), 64):
                sl = slice(i, i + 64)
                with self._autocast():
                    loss = self.pipeline.loss(self._to_device(self.val_x0[sl]), model=net,
                                              t=self.val_t[sl], noise=self.val_noise[sl],
                                              encoded=self.encoded,
                                              condition=self._val_condition(sl))
                total += float(loss) * len(self.val_x0[sl])
            net.train(was_training)
            out[name] = total / len(self.val_x0)
        return out

    def sample_grid(self, path: Path) -> Path:
        """A grid of EMA samples from fixed seed noise, saved as PNG (conditional runs: on the
        fixed validate slices' conditions, in turn)."""
        c = self.cfg
        cond = self._val_condition(torch.arange(c.sample_n) % len(self.val_x0))
        x = self.pipeline.sample(c.sample_n, model=self.ema.model, sampler=c.sampler,
                                 steps=c.sample_steps, condition=cond,
                                 generator=cpu_generator(c.seed), progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((x.float().cpu() + 1) / 2, path, nrow=int(c.sample_n ** 0.5 + 0.5), padding=1)
        return path


def train(config: TrainConfig, *, resume: bool = False, model: torch.nn.Module | None = None,
          **datasets) -> TrainResult:
    """Train a run described by ``config`` (see :class:`Trainer`; ``model`` for an external
    network); under torchrun, ends the process group it joined."""
    trainer = Trainer(config, resume=resume, model=model, **datasets)
    result = trainer.fit()
    destroy(trainer.dist)  # (after a RankFailure the process just exits)
    return result
