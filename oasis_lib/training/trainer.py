"""The diffusion trainer: a DDPM training loop a student can leave running overnight and trust.

One optimiser step (Ho et al. 2020, Algorithm 1): draw x0 from the data, t ~ U{0..T-1} and
eps ~ N(0, I); form x_t = q_sample(x0, t, eps); regress the network output on the target
(eps, x0 or v). The loss and the sample grids are the run's
:class:`~oasis_lib.diffusion.DiffusionPipeline`'s (``pipeline.loss``, ``pipeline.sample``);
validation uses fixed slices, fixed timesteps and fixed noise, so the number is comparable
between epochs; the grid is drawn by the EMA model from fixed seed noise. Everything around
the step (optimiser, EMA, checkpoints, exact resume, budget, signals, DDP) is the shared
:class:`~oasis_lib.training.loop.TrainingLoop`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from ..config import TrainConfig
from ..diffusion.objectives import validation_draws
from ..models.factory import build_pipeline
from ..seeding import cpu_generator
from .distributed import destroy
from .loop import RESUME_OVERRIDES, NonFiniteLossError, TrainingLoop, TrainResult, _images

__all__ = ["RESUME_OVERRIDES", "NonFiniteLossError", "TrainResult", "Trainer", "train"]


class Trainer(TrainingLoop):
    """Train the diffusion model ``config`` describes: ``Trainer(cfg).fit()``."""

    # ------------------------------------------------------------------ what is trained
    def build(self) -> torch.nn.Module:
        """The network to optimise (here: the diffusion pipeline's), before moving it."""
        self.pipeline = build_pipeline(self.cfg)
        self.schedule = self.pipeline.schedule
        return self.pipeline.model

    def compute_loss(self, x0: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (on the device), drawing from ``self.gen``."""
        return self.pipeline.loss(x0, model=self.model, generator=self.gen,
                                  encoded=self.encoded)

    def _fixed_validation_batch(self) -> None:
        """Fixed validate slices (spread over all cases), timesteps and noise
        (:func:`~oasis_lib.diffusion.objectives.validation_draws`)."""
        n = min(self.cfg.val_size, len(self.val_set))
        idx = torch.linspace(0, len(self.val_set) - 1, n).round().long().tolist()
        self.val_x0 = torch.stack([_images(self.val_set[i]) for i in idx])
        self.val_t, self.val_noise = validation_draws(
            self.schedule, (n, *self.pipeline.sample_shape), seed=self.cfg.seed + 1)

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
                                              encoded=self.encoded)
                total += float(loss) * len(self.val_x0[sl])
            net.train(was_training)
            out[name] = total / len(self.val_x0)
        return out

    def sample_grid(self, path: Path) -> Path:
        """A grid of EMA samples from fixed seed noise, saved as PNG."""
        c = self.cfg
        x = self.pipeline.sample(c.sample_n, model=self.ema.model, sampler=c.sampler,
                                 steps=c.sample_steps,
                                 generator=cpu_generator(c.seed), progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((x.float().cpu() + 1) / 2, path, nrow=int(c.sample_n ** 0.5 + 0.5), padding=1)
        return path


def train(config: TrainConfig, *, resume: bool = False, **datasets) -> TrainResult:
    """Train a run described by ``config`` (see :class:`Trainer`); under torchrun, ends the
    process group it joined."""
    trainer = Trainer(config, resume=resume, **datasets)
    result = trainer.fit()
    destroy(trainer.dist)  # (after a RankFailure the process just exits)
    return result
