"""Distilling the autoencoder's decoder into a light one with the shared training loop.

:class:`DecoderTrainer` is a :class:`~oasis_lib.training.loop.TrainingLoop` (AdamW with
warm-up and clipping, the EMA, atomic checkpoints, exact resume, rank-invariant DDP, the time
budget, the metrics log) that trains a :class:`~oasis_lib.models.lite_decoder.LiteDecoder` to
reproduce a frozen autoencoder's decoder D: TAESD's idea of a tiny decoder for the same latents
(Bohan 2023), trained here by distillation from D rather than adversarially. Its hooks:

* data (``latent_run``/``encoded_sets``): the training and validate slices' latents, the
  posterior means of :func:`~oasis_lib.data.latent_cache.cached_latents` (unscaled, the
  cache the latent diffusion runs share);
* ``compute_loss``: a random ``latent_crop`` crop of each latent (an offset per latent, keyed),
  the teacher's image ``clamp(D(z), -1, 1)`` computed without gradients, then
  ``L1(D_lite(z), D(z)) + edge_weight * L1(lap D_lite(z), lap D(z))`` (:func:`distill_loss`);
  both decoders see the same crop, so their borders agree;
* ``validate``: whole validate latents: the loss of the live and EMA weights and the EMA's PSNR
  against the teacher's images (data range 2, whole slice);
* ``sample_grid``: the teacher's images (top) above the EMA's (bottom).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from torchvision.utils import save_image

from ..data.latent_cache import cached_latents
from ..decoder_train_config import DecoderTrainConfig
from ..models.lite_decoder import LiteDecoder, LiteDecoderConfig
from ..pretrained_autoencoder import autoencoder_sha256, load_autoencoder
from .distributed import barrier
from .draws import keyed_crops
from .loop import TrainingLoop, TrainResult

__all__ = ["DecoderTrainer", "distill_loss", "train_decoder"]

#: The 5-point discrete Laplacian (the texture metric's, evaluation.texture.LAPLACIAN_KERNEL).
_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor(_LAPLACIAN, dtype=x.dtype, device=x.device)[None, None]
    return F.conv2d(x, kernel.expand(x.shape[1], 1, 3, 3), groups=x.shape[1])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, *,
                 edge_weight: float = 1.0) -> torch.Tensor:
    """``mean|s - t| + edge_weight * mean|lap s - lap t|``: L1 between the images, plus L1
    between their 5-point Laplacians (valid positions), in float32. L1 alone lets a small
    decoder trade fine texture for a lower average error; the Laplacian term prices it."""
    s, t = student.float(), teacher.float()
    loss = (s - t).abs().mean()
    if edge_weight > 0:
        loss = loss + edge_weight * (_laplacian(s) - _laplacian(t)).abs().mean()
    return loss


class DecoderTrainer(TrainingLoop):
    """Train ``DecoderTrainConfig``: ``DecoderTrainer(cfg).fit()``. ``train_set``/``val_set``
    passed by a caller are slices (as for the other trainers); they are encoded once."""

    cli_command = "train-decoder"  # named by the stop message: how to resume this run
    config_class = DecoderTrainConfig

    # ------------------------------------------------------------------ what is trained
    def build(self) -> torch.nn.Module:
        c = self.cfg
        self.pipeline = self.schedule = None  # nothing to diffuse here
        self.teacher = load_autoencoder(c.autoencoder, device=self.device)
        found = autoencoder_sha256(self.teacher)
        if c.autoencoder_sha256 is None:
            c.autoencoder_sha256 = found  # stored in every checkpoint and in the export
        elif c.autoencoder_sha256 != found:
            raise ValueError(f"{c.autoencoder} is not the autoencoder this run distils (sha256 "
                             f"{found[:12]}, the run's {c.autoencoder_sha256[:12]}); pass the "
                             "run's autoencoder or start a new run")
        ae = self.teacher.config
        config = LiteDecoderConfig.preset(c.lite_decoder, latent_channels=ae.latent_channels,
                                          out_channels=ae.out_channels)
        if config.downsampling_factor != ae.downsampling_factor:
            raise ValueError(f"the {c.lite_decoder} light decoder upsamples by "
                             f"f={config.downsampling_factor}, the autoencoder by "
                             f"f={ae.downsampling_factor}; choose a preset with "
                             f"{ae.downsampling_factor.bit_length() - 1} levels")
        return LiteDecoder(config, latent_scale=float(self.teacher.scale_factor))

    def latent_run(self) -> bool:
        return True  # trains on the slices' latents

    def encoded_sets(self):
        """The training and validate slices' cached latents (posterior means, unscaled): rank
        0 encodes and writes the cache, the others wait, then read it."""
        sets = []
        if not self.dist.is_main:
            barrier(self.dist, "waiting for rank 0's latent cache")
        for data in (self.train_set, self.val_set):
            cached = cached_latents(self.teacher, data, self.cfg.latent_cache_dir,
                                    progress=self.cfg.progress and self.dist.is_main)
            sets.append(TensorDataset(cached.latents))
        if self.dist.is_main:
            barrier(self.dist, "latent cache written")
        return tuple(sets)

    @torch.no_grad()
    def teacher_images(self, z: torch.Tensor) -> torch.Tensor:
        """The frozen decoder's images of unscaled latents, clamped to [-1, 1] (as sampled)."""
        return self.teacher.decode(z).clamp(-1, 1)

    def compute_loss(self, z: torch.Tensor) -> torch.Tensor:
        z = keyed_crops(z, self.cfg.latent_crop, self.draws)  # a crop per latent, keyed
        return distill_loss(self.model(z), self.teacher_images(z),
                            edge_weight=self.cfg.edge_weight)

    # ------------------------------------------------------------------ validation
    def _fixed_validation_batch(self) -> None:
        """Validate latents spread over all cases, and the teacher's images of them."""
        latents = self.val_set.tensors[0]
        n = min(self.cfg.val_size, len(latents))
        idx = torch.linspace(0, len(latents) - 1, n).round().long()
        self.val_z = latents[idx]
        self.val_images = self._decode(lambda z: self.teacher_images(z), self.val_z)

    @torch.no_grad()
    def _decode(self, decode, z: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(z), 16):
            with self._autocast():
                out.append(decode(self._to_device(z[i:i + 16])).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """The loss of the live and EMA weights on whole validate latents, and the EMA's PSNR
        (dB, data range 2) against the teacher's images."""
        out = {}
        for name, net in (("val_loss", self.eval_model), ("val_loss_ema", self.ema.model)):
            was_training = net.training
            net.eval()
            images = self._decode(net, self.val_z)
            net.train(was_training)
            out[name] = float(distill_loss(images.clamp(-1, 1), self.val_images,
                                           edge_weight=self.cfg.edge_weight))
            if name == "val_loss_ema":
                mse = (images.clamp(-1, 1) - self.val_images).pow(2).mean()
                out["val_psnr_ema"] = round(float(10 * torch.log10(4.0 / mse)), 3)
        return out

    def sample_grid(self, path: Path) -> Path:
        """The teacher's images (top row) over the EMA decoder's (bottom row), as PNG."""
        n = self.cfg.sample_n
        ema = self.ema.model.eval()
        images = self._decode(ema, self.val_z[:n]).clamp(-1, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((torch.cat([self.val_images[:n], images]) + 1) / 2, path, nrow=n, padding=1)
        return path


def train_decoder(config: DecoderTrainConfig, *, resume: bool = False, **datasets) -> TrainResult:
    """Distil the light decoder a config describes (see :class:`DecoderTrainer`)."""
    return DecoderTrainer(config, resume=resume, **datasets).fit()
