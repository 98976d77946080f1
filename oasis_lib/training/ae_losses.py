"""The autoencoder's training loss: L1 + SSIM + a tiny KL + a perceptual term (+ adversarial).

Rombach et al. 2022 (app. G) train their KL autoencoders with ``L1 + LPIPS + 1e-6 KL + GAN``.
LPIPS (Zhang et al. 2018) needs ImageNet VGG/AlexNet weights that cannot be downloaded here, so
the perceptual term defaults to the same construction on a network we own: the tissue
segmenter's encoder levels (:func:`segmenter_perceptual_loss`); a user holding LPIPS weights
can pass :func:`load_lpips` instead. Every term is a mean per pixel, so the weights compare
with LDM's: LDM sums the L1 over the pixels of an image and adds ``1e-6 x`` the KL summed over
its latent elements; dividing both by the number of pixels gives our ``mean L1 + 1e-6 x KL /
pixels``.

    total = l1 * mean|x - x_hat| + ssim * (1 - SSIM(x, x_hat)) + kl * KL(q || N(0, I)) / pixels
            + perceptual * P(x_hat, x) + adversarial * (-mean D(x_hat))

The adversarial term is off by default (weight 0; the discriminator adds to the cost of a step
on a CPU). When it is on, its weight is multiplied by LDM's adaptive weight (Esser et al. 2021,
eq. 7; :func:`adaptive_weight`), which balances the gradients of the reconstruction and the
adversarial terms at the decoder's last layer; the trainer starts it after a warm-up
(``AutoencoderTrainConfig.disc_start``), since it knows the step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..autoencoder_train_config import AutoencoderLossConfig
from ..checkpoint import CheckpointError
from ..evaluation.ssim import ssim_map
from ..models.autoencoder import DiagonalGaussian
from ..models.discriminator import hinge_d_loss, hinge_g_loss

__all__ = ["LPIPS_VGG_CHANNELS", "SEGMENTER_LAYERS", "AutoencoderLossConfig",
           "FeaturePerceptualLoss", "adaptive_weight", "autoencoder_loss", "discriminator_loss",
           "load_lpips", "segmenter_perceptual_loss"]

SEGMENTER_LAYERS = ("down.0", "down.1", "down.2", "down.3")  # TissueSegmenter encoder levels
LPIPS_VGG_CHANNELS = (64, 128, 256, 512, 512)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_VGG_TAPS = (3, 8, 15, 22, 29)  # indices of those ReLUs in torchvision's vgg16().features
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class _Captured(Exception):  # noqa: N818 (control flow, not an error)
    """Raised by the last forward hook: the layers we need are computed, skip the rest."""


class FeaturePerceptualLoss(nn.Module):
    """LPIPS-style distance in the feature space of a frozen network (Zhang et al. 2018, eq. 1):

    ``d(a, b) = sum_l mean_{h,w} sum_c w_lc (u_l - v_l)^2`` with ``u_l = F_l(a) / ||F_l(a)||_c``
    (each spatial feature vector normalised to unit length over its channels), ``w_lc = 1``
    unless ``weights`` are given (LPIPS' learned per-channel weights).

    Args:
        feature_net: an ``nn.Module`` whose submodules named in ``layers`` give the maps (read
            with forward hooks; the forward pass stops once all are computed), or, with
            ``layers=None``, a callable returning a list of ``[B, C, H, W]`` maps (e.g.
            ``segmenter.encode``). Its parameters are frozen and it stays in eval mode.
        layers: submodule names (``dict(net.named_modules())`` keys) or None.
        weights: per-layer channel weights ``[C_l]``, or None for 1.
        eps: added to the norms, as LPIPS (1e-10).

    ``forward(a, b)`` returns float ``[B]``; gradients flow to ``a`` and ``b``, not the net.
    """

    def __init__(self, feature_net: nn.Module | Callable, layers: Sequence[str] | None = None,
                 *, weights: Sequence[torch.Tensor] | None = None, eps: float = 1e-10) -> None:
        super().__init__()
        module = feature_net if isinstance(feature_net, nn.Module) else getattr(
            feature_net, "__self__", None)
        if layers is not None:
            if not isinstance(feature_net, nn.Module):
                raise ValueError("layers need an nn.Module feature_net (hooks are registered "
                                 "on its submodules); pass layers=None for a callable")
            names = dict(feature_net.named_modules())
            unknown = [n for n in layers if n not in names]
            if unknown or not layers:
                shown = ", ".join(n for n in list(names)[1:13])
                raise ValueError(f"unknown layer(s) {unknown} of {type(feature_net).__name__}; "
                                 f"choose among its submodules, e.g. {shown}")
        if isinstance(module, nn.Module):
            module.requires_grad_(False).eval()
            self.net = module
        # a Module is called as self.net (registered once); a callable is kept as a plain attr
        self._fn = None if isinstance(feature_net, nn.Module) else feature_net
        self.layers = None if layers is None else tuple(layers)
        self.eps = float(eps)
        self.num_weights = 0 if weights is None else len(weights)
        for k, w in enumerate(weights or ()):
            self.register_buffer(f"weight{k}", torch.as_tensor(w).detach().float().flatten())

    def train(self, mode: bool = True) -> FeaturePerceptualLoss:
        super().train(mode)
        if hasattr(self, "net"):
            self.net.eval()  # frozen: no dropout or BatchNorm updates, ever
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps of ``x``, in the order of ``layers``."""
        run = self.net if self._fn is None else self._fn
        if self.layers is None:
            out = run(x)
            return list(out) if isinstance(out, list | tuple) else [out]
        captured: dict[str, torch.Tensor] = {}

        def hook(name: str):
            def record(_module, _inputs, output):
                captured[name] = output
                if len(captured) == len(self.layers):
                    raise _Captured
            return record

        modules = dict(self.net.named_modules())
        handles = [modules[n].register_forward_hook(hook(n)) for n in self.layers]
        try:
            run(x)
        except _Captured:
            pass
        finally:
            for h in handles:
                h.remove()
        return [captured[n] for n in self.layers]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape != b.shape:
            raise ValueError(f"inputs differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
        maps = self.features(torch.cat([a, b]))  # one pass over both halves
        if self.num_weights and self.num_weights != len(maps):
            raise ValueError(f"{self.num_weights} weight vectors for {len(maps)} feature maps")
        total = a.new_zeros(a.shape[0])
        for k, m in enumerate(maps):
            m = m.float()
            m = m / (m.norm(dim=1, keepdim=True) + self.eps)
            u, v = m.chunk(2)
            d = (u - v).pow(2)
            if self.num_weights:
                d = d * getattr(self, f"weight{k}").view(1, -1, 1, 1)
            total = total + d.sum(1).mean(dim=(1, 2))
        return total


def segmenter_perceptual_loss(segmenter: nn.Module | str | os.PathLike | None = None, *,
                              layers: Sequence[str] = SEGMENTER_LAYERS) -> FeaturePerceptualLoss:
    """:class:`FeaturePerceptualLoss` on the encoder levels of a :class:`TissueSegmenter`: the
    given one, the one stored at a path, or (None) the shipped weights. The segmenter learnt
    to tell CSF, grey and white matter apart, so its features weigh exactly the boundaries a
    blurry reconstruction loses. Weights come from disk only; nothing is downloaded."""
    if segmenter is None or isinstance(segmenter, str | os.PathLike):
        from ..evaluation.segmenter import load_segmenter

        segmenter = load_segmenter(segmenter, device="cpu")
    return FeaturePerceptualLoss(segmenter, layers)


class _ImageNetInput(nn.Module):
    """Grey ``[B, 1, H, W]`` in [-1, 1] -> 3 channels normalised as VGG's ImageNet inputs
    (LPIPS' scaling layer: shift 2 mean - 1, scale 2 std, in [-1, 1] units)."""

    def __init__(self) -> None:
        super().__init__()
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("shift", (2 * mean - 1).view(1, 3, 1, 1))
        self.register_buffer("scale", (2 * std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(-1, 3, -1, -1) - self.shift) / self.scale


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"LPIPS weights file not found: {path} (nothing is downloaded; "
                              "pass the path of a local file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read LPIPS weights {path}: {err}") from err
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def load_lpips(path: str | os.PathLike, *,
               backbone_path: str | os.PathLike | None = None) -> FeaturePerceptualLoss:
    """LPIPS-VGG (Zhang et al. 2018) from local files, as a :class:`FeaturePerceptualLoss`.

    ``path`` holds the five learned channel weights ``lin{k}.model.{1|0}.weight`` ``[1, C_k, 1,
    1]`` (C = 64, 128, 256, 512, 512), as the ``lpips`` package's ``weights/v0.1/vgg.pth``, and
    possibly the VGG16 backbone too (a full ``lpips.LPIPS(net="vgg").state_dict()`` holds it as
    ``net.slice{n}.{i}.*``). Otherwise pass ``backbone_path``: torchvision's VGG16 ImageNet state
    dict (``vgg16-397923af.pth``, keys ``features.{i}.*``). Files are read with
    ``weights_only=True``; keys that do not fit raise :class:`CheckpointError` naming the file.
    Grey images are repeated to 3 channels and normalised as LPIPS does.
    """
    from torchvision.models.vgg import cfgs, make_layers

    path = Path(path)
    state = _read_state(path)
    sources = str(path)
    if backbone_path is not None:
        state = {**_read_state(Path(backbone_path)), **state}
        sources += f" + {backbone_path}"
    weights = []
    for k, ch in enumerate(LPIPS_VGG_CHANNELS):
        key = next((f"lin{k}.model.{j}.weight" for j in (1, 0)
                    if f"lin{k}.model.{j}.weight" in state), None)
        if key is None or tuple(state[key].shape) != (1, ch, 1, 1):
            found = ", ".join(sorted(state)[:6])
            raise CheckpointError(f"{path} is not an LPIPS-VGG weights file: expected "
                                  f"lin{k}.model.1.weight of shape (1, {ch}, 1, 1); found keys "
                                  f"{found}{' ...' if len(state) > 6 else ''}")
        weights.append(state[key].flatten())
    backbone = {}
    for key, value in state.items():
        match = re.fullmatch(r"(?:net\.slice\d\.|features\.)(\d+)\.(weight|bias)", key)
        if match:
            backbone[f"{match[1]}.{match[2]}"] = value
    vgg = make_layers(cfgs["D"])[:_VGG_TAPS[-1] + 1]  # VGG16 convs up to relu5_3
    own = vgg.state_dict()
    missing = sorted(set(own) - set(backbone), key=lambda k: int(k.split(".")[0]))
    wrong = [k for k in set(own) & set(backbone) if own[k].shape != backbone[k].shape]
    if missing or wrong:
        what = (f"missing VGG16 weights {missing[:4]}{' ...' if len(missing) > 4 else ''}"
                if missing else f"mis-shaped VGG16 weights {sorted(wrong)[:4]}")
        hint = "" if backbone_path else "; pass backbone_path= (torchvision's vgg16 state dict)"
        raise CheckpointError(f"{sources}: {what}{hint}")
    vgg.load_state_dict({k: backbone[k].float() for k in own})
    net = nn.Sequential(_ImageNetInput(), vgg)
    return FeaturePerceptualLoss(net, [f"1.{i}" for i in _VGG_TAPS], weights=weights)


def adaptive_weight(reconstruction: torch.Tensor, adversarial: torch.Tensor,
                    last_layer: torch.Tensor, *, delta: float = 1e-4,
                    max_weight: float = 1e4) -> torch.Tensor:
    """LDM's adaptive weight of the adversarial term (Esser et al. 2021, eq. 7):

    ``lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + delta)``

    with ``G_L`` the weight of the decoder's last layer, clamped to ``[0, max_weight]`` and
    detached (it scales the term; no gradient flows through it). The adversarial gradient at
    the output then has the size of the reconstruction gradient, whatever the scale of D's
    logits. Both losses must still have their graphs (this calls ``torch.autograd.grad`` with
    ``retain_graph=True``)."""
    g_rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    weight = g_rec.norm() / (g_adv.norm() + delta)
    return weight.clamp(0.0, max_weight).detach()


def autoencoder_loss(recon: torch.Tensor, x: torch.Tensor, posterior: DiagonalGaussian, *,
                     config: AutoencoderLossConfig | None = None,
                     perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     disc: nn.Module | None = None,
                     last_layer: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted sum of the module docstring, and its unweighted parts.

    Args:
        recon: the decoder's output ``[B, 1, H, W]``; x: the input images (same shape).
        posterior: the encoder's :class:`DiagonalGaussian`.
        config: the weights (None: :class:`AutoencoderLossConfig` defaults).
        perceptual: ``(recon, x) -> [B]`` distance, needed when ``config.perceptual > 0``.
        disc: a :class:`PatchDiscriminator`, needed when ``config.adversarial > 0``.
        last_layer: the weight of the decoder's last layer; when given (training), the
            adversarial weight is multiplied by :func:`adaptive_weight` of the reconstruction
            terms (L1, SSIM, perceptual) against the adversarial term, reported as
            ``parts["adaptive_weight"]``; None (validation): weight 1.

    Returns ``(total, parts)``: ``total`` a scalar with gradients, ``parts`` the float value
    of each term with a non-zero weight (l1 always) before weighting, and ``total``.
    """
    config = config or AutoencoderLossConfig()
    if recon.shape != x.shape:
        raise ValueError(f"recon {tuple(recon.shape)} and x {tuple(x.shape)} differ in shape")
    if config.perceptual > 0 and perceptual is None:
        raise ValueError("config.perceptual > 0 needs perceptual= (segmenter_perceptual_loss() "
                         "or load_lpips(path)); or set AutoencoderLossConfig(perceptual=0)")
    if config.adversarial > 0 and disc is None:
        raise ValueError("config.adversarial > 0 needs disc= (a PatchDiscriminator); or set "
                         "AutoencoderLossConfig(adversarial=0)")
    terms = {"l1": (recon - x).abs().mean()}
    if config.ssim > 0:
        terms["ssim"] = 1.0 - ssim_map(recon.float(), x.float()).mean()
    if config.kl > 0:
        terms["kl"] = posterior.kl().mean() / x[0].numel()
    if config.perceptual > 0:
        terms["perceptual"] = perceptual(recon, x).mean()
    weights = {name: getattr(config, name) for name in terms}
    if config.adversarial > 0:
        terms["adversarial"] = hinge_g_loss(disc(recon))
        weights["adversarial"] = config.adversarial
        if last_layer is not None:
            reconstruction = sum(weights[n] * terms[n] for n in terms if n not in
                                 ("kl", "adversarial"))
            lam = adaptive_weight(reconstruction, terms["adversarial"], last_layer)
            weights["adversarial"] = config.adversarial * lam
    total = sum(weights[name] * value for name, value in terms.items())
    parts = {name: float(value.detach()) for name, value in terms.items()}
    if "adversarial" in terms and last_layer is not None:
        parts["adaptive_weight"] = float(weights["adversarial"] / config.adversarial)
    parts["total"] = float(total.detach())
    return total, parts


def discriminator_loss(disc: nn.Module, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss on real ``x`` and detached reconstructions."""
    return hinge_d_loss(disc(x), disc(recon.detach()))
