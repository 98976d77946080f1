"""Training the latent autoencoder with the shared Trainer (no second training loop).

:class:`AutoencoderTrainer` is a :class:`~oasis_lib.training.loop.TrainingLoop` that optimises an
:class:`~oasis_lib.models.autoencoder.AutoencoderKL` instead of a diffusion U-Net. Everything
around the step is the Trainer's own: AdamW with warm-up and clipping, the EMA (which is what
``best.pt`` keeps and what latent diffusion encodes with), atomic checkpoints, exact
kill-and-resume and rank-invariant DDP (the crops and the posterior noise are keyed by (seed,
step, the image's slot in the global batch), :mod:`.draws`), the time budget and the metrics
log. It overrides only what is trained:

* ``compute_loss``: a random ``crop_size`` crop of each native slice (an offset per image, as
  LDM's random crops), encoded with a posterior *sample* (as LDM trains), then
  :func:`~oasis_lib.training.ae_losses.autoencoder_loss` (L1 + SSIM + tiny KL + perceptual,
  + the adaptive-weighted adversarial term from step ``disc_start`` when ``loss.adversarial``
  > 0);
* ``train_step``: the Trainer's step for the autoencoder, then, with the adversarial term on,
  one Adam step of the :class:`~oasis_lib.models.discriminator.PatchDiscriminator` on the hinge
  loss of the same crops against their (detached) reconstructions, as LDM alternates them. D
  and its optimiser are saved in every checkpoint, so a resume is exact;
* ``validate``: whole validate slices through the posterior *mean*, the same loss with its
  parts, and PSNR / SSIM inside the brain (:mod:`oasis_lib.evaluation.reconstruction`);
* ``sample_grid``: validate slices (top) above the EMA's reconstructions (bottom).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torchvision.utils import save_image

from ..autoencoder_train_config import AutoencoderTrainConfig
from ..evaluation.reconstruction import reconstruction_metrics
from ..models.autoencoder import AutoencoderConfig, AutoencoderKL
from ..models.discriminator import PatchDiscriminator
from ..pretrained_autoencoder import load_autoencoder
from .ae_losses import autoencoder_loss, discriminator_loss, load_lpips, segmenter_perceptual_loss
from .distributed import all_reduce_mean
from .draws import StepDraws, keyed_crops
from .loop import TrainingLoop, TrainResult, _images


class KeyedPosterior(torch.nn.Module):
    """``AutoencoderKL.forward`` with keyed posterior noise (``draws``, stream "posterior"):
    ``(decode(z), posterior)`` with ``z = mean + std * noise`` (:meth:`DiagonalGaussian.sample
    <oasis_lib.models.autoencoder.DiagonalGaussian.sample>`'s reparameterisation), so each
    image's noise is its own. It shares the autoencoder's parameters (DDP wraps it)."""

    def __init__(self, autoencoder: torch.nn.Module):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor, draws: StepDraws):
        posterior = self.autoencoder.encode(x)
        noise = draws.normal(posterior.mean.shape, "posterior")
        z = posterior.mean + posterior.std * noise.to(posterior.mean.device, posterior.mean.dtype)
        return self.autoencoder.decode(z), posterior


class AutoencoderTrainer(TrainingLoop):
    """Train ``AutoencoderTrainConfig``: ``AutoencoderTrainer(cfg).fit()``."""

    needs_masks = True  # PSNR and SSIM are measured inside the brain (mask > 0)
    cli_command = "train-autoencoder"  # named by the stop message: how to resume this run
    config_class = AutoencoderTrainConfig

    # ------------------------------------------------------------------ what is trained
    def build(self) -> torch.nn.Module:
        c = self.cfg
        self.pipeline = self.schedule = None  # nothing to diffuse here
        if c.perceptual_net == "segmenter" and c.loss.perceptual > 0:
            self.perceptual = segmenter_perceptual_loss(c.perceptual_weights)
        elif c.perceptual_net == "lpips" and c.loss.perceptual > 0:
            self.perceptual = load_lpips(c.perceptual_weights)
        else:
            self.perceptual = None
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        model = AutoencoderKL(AutoencoderConfig.preset(c.preset, **c.autoencoder_overrides))
        if c.init_from and not self.last_path.is_file():  # a new run: start from those weights
            self._init_weights(model, c.init_from)
        self.disc = self.disc_opt = None  # D is built after the autoencoder: same init as without
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # this step's (x, recon)
        if c.loss.adversarial > 0:
            self.disc = PatchDiscriminator(1, c.disc_channels, c.disc_layers).to(self.device)
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=c.disc_lr or c.lr,
                                             betas=(0.5, 0.9))  # LDM's discriminator Adam
        return model

    @staticmethod
    def _init_weights(model: AutoencoderKL, path: str) -> None:
        """Copy a trained autoencoder's weights (a run's EMA or an export) into ``model``: LDM
        trains reconstruction first and adds the critic late (``disc_start``); a fine-tuning
        run with ``init_from`` and ``disc_start=0`` does the same in two runs."""
        source = load_autoencoder(path, device="cpu")
        if source.config != model.config:
            raise ValueError(f"init_from {path} holds an autoencoder of another shape "
                             f"({source.config}); use the run's preset and overrides")
        model.load_state_dict(source.state_dict())

    @property
    def adversarial_on(self) -> bool:
        """Whether this step trains with the adversarial term (after the warm-up)."""
        return (self.disc is not None and self.cfg.loss.adversarial > 0
                and self.step >= self.cfg.disc_start)

    def forward_module(self, net: torch.nn.Module) -> torch.nn.Module:
        return KeyedPosterior(net)  # training passes keyed posterior noise

    def compute_loss(self, x0: torch.Tensor) -> torch.Tensor:
        x = keyed_crops(x0, self.cfg.crop_size, self.draws)  # a crop per image, keyed
        recon, posterior = self.model(x, self.draws)
        config, disc, last_layer = self.cfg.loss, None, None
        if self.adversarial_on:
            disc, last_layer = self.disc, self.raw_model.decoder.conv_out.weight
            self.disc.requires_grad_(False)  # D is fixed while the autoencoder steps
            self._pairs.append((x.detach(), recon.detach()))
        elif config.adversarial > 0:
            config = dataclasses.replace(config, adversarial=0.0)  # still warming up
        loss, self.last_parts = autoencoder_loss(recon, x, posterior, config=config,
                                                 perceptual=self.perceptual, disc=disc,
                                                 last_layer=last_layer)
        if disc is not None:
            # The hinge term -mean D(x_hat) has no fixed scale: it grows as D wins. It acts
            # through its gradient; its value is logged apart ("adversarial"), and the loss the
            # log and the divergence guard see is the reconstruction loss alone.
            parts = self.last_parts
            loss = loss - config.adversarial * parts["adaptive_weight"] * parts["adversarial"]
        return loss

    def train_step(self, x0) -> float:
        """The autoencoder's step, then D's step on the same crops (hinge loss, LDM's
        alternation); D's gradients are averaged over ranks by hand (it is not DDP-wrapped)."""
        self._pairs = []
        loss = super().train_step(x0)
        if self._pairs:
            x = torch.cat([p[0] for p in self._pairs])
            recon = torch.cat([p[1] for p in self._pairs])
            self._pairs = []
            self.disc.requires_grad_(True)
            self.disc_opt.zero_grad(set_to_none=True)
            with self._autocast():
                d_loss = discriminator_loss(self.disc, recon, x)
            d_loss.backward()
            if self.dist.enabled:
                for p in self.disc.parameters():
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.dist.world_size
            self.disc_opt.step()
            self.last_parts["disc"] = all_reduce_mean(float(d_loss.detach()), self.dist)
        return loss

    def _train_record(self) -> dict[str, float]:
        """The adversarial run's extra numbers for the metrics log (D's hinge loss, the
        adaptive weight, the generator's hinge term)."""
        parts = getattr(self, "last_parts", {}) if self.disc is not None else {}
        return {k: round(parts[k], 5) for k in ("disc", "adaptive_weight", "adversarial")
                if k in parts}

    def _log(self, record: dict) -> None:
        if "loss" in record:  # a training record: add D's numbers
            record = {**record, **self._train_record()}
        super()._log(record)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.disc is not None:
            state["disc"] = self.disc.state_dict()
            state["disc_optimizer"] = self.disc_opt.state_dict()
        return state

    def _restore(self, ckpt: dict) -> None:
        super()._restore(ckpt)
        if self.disc is not None and "disc" in ckpt:
            self.disc.load_state_dict(ckpt["disc"])
            self.disc_opt.load_state_dict(ckpt["disc_optimizer"])
        elif self.disc is not None and self.step > self.cfg.disc_start:
            raise ValueError(f"{self.last_path} holds no discriminator: it was trained without "
                             "the adversarial term (resume it without --adversarial)")

    # ------------------------------------------------------------------ validation
    def _fixed_validation_batch(self) -> None:
        """Whole validate slices spread over all cases, with their masks when present."""
        n = min(self.cfg.val_size, len(self.val_set))
        idx = torch.linspace(0, len(self.val_set) - 1, n).round().long().tolist()
        items = [self.val_set[i] for i in idx]
        self.val_x0 = torch.stack([_images(item) for item in items])
        has_masks = isinstance(items[0], list | tuple) and len(items[0]) > 1
        self.val_masks = torch.stack([item[1] for item in items]) if has_masks else None

    @torch.no_grad()
    def reconstruct(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions through the posterior mean, in batches, on the CPU."""
        out = []
        for i in range(0, len(x), 16):
            with self._autocast():
                recon, _ = net(self._to_device(x[i:i + 16]), sample_posterior=False)
            out.append(recon.float().cpu())
        return torch.cat(out)

    @property
    def _val_loss_config(self):
        """The validation loss leaves the adversarial term out: D changes as it trains, so
        the term would not compare across epochs (best.pt is chosen on this loss)."""
        return dataclasses.replace(self.cfg.loss, adversarial=0.0)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss (posterior mean, whole slices) of the live and EMA weights, and the EMA's PSNR
        and SSIM inside the brain (mask > 0 where masks are loaded, else the whole slice)."""
        out = {}
        # eval_model: the network without its DDP wrapper (rank 0 validates alone)
        for name, net in (("val_loss", self.eval_model), ("val_loss_ema", self.ema.model)):
            was_training = net.training
            net.eval()
            total = 0.0
            for i in range(0, len(self.val_x0), 16):
                x = self._to_device(self.val_x0[i:i + 16])
                with self._autocast():
                    recon, posterior = net(x, sample_posterior=False)
                    loss, _ = autoencoder_loss(recon.float(), x, posterior,
                                               config=self._val_loss_config,
                                               perceptual=self.perceptual)
                total += float(loss) * len(x)
            net.train(was_training)
            out[name] = total / len(self.val_x0)
        recon = self.reconstruct(self.ema.model.eval(), self.val_x0)
        brain = self.val_masks if self.val_masks is not None else None
        quality = reconstruction_metrics(self.val_x0, recon, brain_mask=brain)
        out["val_psnr_ema"] = round(float(quality["psnr"]), 3)
        out["val_ssim_ema"] = round(float(quality["ssim"]), 4)
        return out

    def sample_grid(self, path: Path) -> Path:
        """Validate slices (top row) over the EMA's reconstructions (bottom row), as PNG."""
        x = self.val_x0[: self.cfg.sample_n]
        recon = self.reconstruct(self.ema.model.eval(), x)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((torch.cat([x, recon]).clamp(-1, 1) + 1) / 2, path, nrow=len(x), padding=1)
        return path


def train_autoencoder(config: AutoencoderTrainConfig, *, resume: bool = False,
                      **datasets) -> TrainResult:
    """Train the autoencoder a config describes (see :class:`AutoencoderTrainer`)."""
    return AutoencoderTrainer(config, resume=resume, **datasets).fit()
