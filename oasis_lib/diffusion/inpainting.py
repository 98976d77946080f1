"""Inpainting with any unconditional or conditional model: RePaint (Lugmayr et al. 2022).

Given an image and a region mask (1 = regenerate, 0 = keep), every reverse step of DDPM is
followed by a paste (Lugmayr et al. 2022, Algorithm 1, lines 5-8): the kept region is replaced by
a fresh forward sample of the given image at the same noise level,

    x_{t-1} = m * x_{t-1}^unknown + (1 - m) * x_{t-1}^known,   m = region,
    x_{t-1}^known   ~ q(x_{t-1} | x_0 = image)        (Ho et al. eq. 4, ``schedule.q_sample``)
    x_{t-1}^unknown ~ p_theta(x_{t-1} | x_t)          (one DDPM step, ``sampling.p_sample``)

The two halves are sampled independently, so they need not agree at the border; RePaint then
*resamples* (Algorithm 1, line 9, and sec. 4.2): after going down ``jump_length`` steps it
re-noises the result back up ``jump_length`` steps with the forward process
q(x_t | x_{t-1}) (eq. 2, ``schedule.q_step``) and denoises again, ``resample`` times in all, so
that the generated part can adapt to the pasted part. ``resample = 1`` is plain DDPM with
pasting; the paper uses jump_length = 10, resample = 10 with T = 250.

Indexing follows :mod:`oasis_lib.diffusion.sampling`: the chain holds x_h for h = T-1 (pure
noise) down to h = -1 (the data); a reverse step at h goes to x_{h-1}, a forward jump step from
x_{h-1} to x_h.

Random draws (CPU, ``torch.randn(shape, dtype=float32)``, then moved): ``generator`` draws x_T
(unless given) and then the DDPM noise z of every reverse step with h > 0, in the order of
:func:`~oasis_lib.diffusion.sampling.sample` with ``sampler="ddpm"``; ``known_generator``
(default: the same ``generator``) draws, right after each reverse step's z, the noise of the
known region's ``q_sample`` (when h - 1 >= 0), and one noise per forward jump step. With one
generator the order is therefore: x_T, then per reverse step [z, known noise], per jump step
[jump noise].

Latent space: the region is first brought to the latent grid by :func:`latent_region`, which
marks a latent cell as unknown if any of its pixels is in the region and then dilates by
``dilation`` cells: the decoder mixes neighbouring latents, so the known latents right at the
border would otherwise be decoded next to generated ones they were never harmonised with; the
extra ring is regenerated too. After decoding, :func:`paste_back` puts the original pixels back
outside the region through :func:`feather_mask`, a linear ramp over ``feather`` pixels outside
the region (keep it within the dilated latent ring, i.e. feather <= dilation * factor), so the
seam falls where the decode was free to follow the surroundings and the kept region is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .objectives import check_prediction_type
from .sampling import DDPM_VARIANCES, SampleResult, _eval_mode, _model_device, p_sample
from .schedule import NoiseSchedule


def repaint_timesteps(T: int, *, jump_length: int = 1, resample: int = 1) -> list[int]:
    """The chain's timesteps h, from T-1 (noise) to -1 (data), with RePaint's jumps.

    Going down, whenever the chain reaches a multiple h of ``jump_length`` with
    h + jump_length <= T - 1, it jumps back up to h + jump_length and comes down again,
    ``resample - 1`` times per such h. Consecutive entries differ by 1: down = a reverse step
    (one network call), up = a forward step. Reverse steps in all:
    T + (resample - 1) * jump_length * ceil((T - jump_length) / jump_length).

    Example: T=10, jump_length=3, resample=2 ->
    9 8 7 6 [7 8 9] 8 7 6 5 4 3 [4 5 6] 5 4 3 2 1 0 [1 2 3] 2 1 0 -1.
    """
    if int(T) != T or T < 2:
        raise ValueError(f"T must be an integer >= 2, got {T!r}")
    if int(jump_length) != jump_length or not 1 <= jump_length < T:
        raise ValueError(f"jump_length must be an integer in [1, T-1={T - 1}], got {jump_length!r}")
    if int(resample) != resample or resample < 1:
        raise ValueError(f"resample must be a positive integer, got {resample!r}")
    left = {h: resample - 1 for h in range(0, T - jump_length, jump_length)}
    h, out = T - 1, [T - 1]
    while h >= 0:
        h -= 1
        out.append(h)
        if left.get(h, 0) > 0:
            left[h] -= 1
            for _ in range(jump_length):
                h += 1
                out.append(h)
    return out


def _region_like(region: Tensor, x: Tensor) -> Tensor:
    """A bool region broadcast to x [B, C, H, W]; accepts [H, W], [B, H, W], [B, 1|C, H, W]."""
    if region.ndim == 2:
        region = region[None, None]
    elif region.ndim == 3:
        region = region[:, None]
    values = torch.unique(region)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"region must hold only 0 (keep) and 1 (regenerate); found "
                         f"{values[:8].tolist()}")
    try:
        return torch.broadcast_to(region.bool(), x.shape).to(x.device)
    except RuntimeError as err:
        raise ValueError(f"region of shape {tuple(region.shape)} does not broadcast to the image "
                         f"shape {tuple(x.shape)}; use [B, 1, H, W] or [H, W]") from err


def repaint(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    image: Tensor,
    region: Tensor,
    *,
    jump_length: int = 1,
    resample: int = 1,
    prediction_type: str = "eps",
    ddpm_variance: str = "posterior",
    clip_x0: bool = True,
    generator: torch.Generator | None = None,
    known_generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    x_T: Tensor | None = None,
    return_intermediates: bool = False,
    every: int = 1,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor | SampleResult:
    """Regenerate ``region`` of ``image`` with RePaint (Lugmayr et al. 2022, Algorithm 1).

    Args:
        model: any network called as ``model(x_t, t)`` (wrap conditional ones, e.g. in
            :class:`~oasis_lib.diffusion.guidance.ClassifierFreeGuidance`). Eval mode and
            ``torch.inference_mode()`` as in :func:`~oasis_lib.diffusion.sampling.sample`.
        schedule (NoiseSchedule): the model's schedule.
        image (Tensor [B, C, H, W]): the known content in [-1, 1] (its values inside the region
            are ignored).
        region (Tensor): 1 = regenerate, 0 = keep; ``[B, 1, H, W]``, ``[B, H, W]`` or
            ``[H, W]``, bool or 0/1 values.
        jump_length (int, default 1), resample (int, default 1): RePaint's j and r (see
            :func:`repaint_timesteps`); the cost is that many more network calls.
        prediction_type, ddpm_variance, clip_x0, device, x_T, return_intermediates, every,
            progress, dtype: as in :func:`~oasis_lib.diffusion.sampling.sample` (DDPM).
        generator, known_generator: CPU generators; the order of the draws is in the module
            docstring.

    Returns:
        The images [B, C, H, W], equal to ``image`` exactly where region = 0, or a
        :class:`~oasis_lib.diffusion.sampling.SampleResult` whose records are the network calls
        in order (``timesteps`` then goes up at each jump; ``x0s`` are the raw x0 predictions).
    """
    check_prediction_type(prediction_type)
    if ddpm_variance not in DDPM_VARIANCES:
        raise ValueError(f"unknown ddpm_variance {ddpm_variance!r}; choose one of {DDPM_VARIANCES}")
    if int(every) != every or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if image.ndim != 4:
        raise ValueError(f"expected image of shape [B, C, H, W], got {tuple(image.shape)}")
    ts = repaint_timesteps(schedule.T, jump_length=jump_length, resample=resample)
    device = torch.device(device) if device is not None else _model_device(model)
    image = image.to(device=device, dtype=dtype)
    shape = tuple(image.shape)
    keep_out = _region_like(region, image)
    known_generator = generator if known_generator is None else known_generator

    def randn(gen) -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32).to(device=device,
                                                                         dtype=dtype)

    if x_T is None:
        x = randn(generator)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        x = x_T.to(device=device, dtype=dtype)

    xs, x0s, rec_t = [], [], []
    calls = 0
    moves = list(zip(ts[:-1], ts[1:], strict=True))
    with _eval_mode(model), torch.inference_mode():
        for h, h_next in tqdm(moves, desc="repaint", disable=not progress, leave=False):
            if h_next > h:  # forward jump step x_{h_next - 1} -> x_{h_next} (eq. 2)
                x = schedule.q_step(x, h_next, randn(known_generator))
                continue
            t_batch = torch.full((shape[0],), h, device=device, dtype=torch.long)
            output = model(x, t_batch)
            z = randn(generator) if h > 0 else None
            unknown, x0 = p_sample(output, x, h, schedule, noise=z, clip_x0=clip_x0,
                                   prediction_type=prediction_type, variance=ddpm_variance)
            if h_next >= 0:  # eq. 4 at the new level; at the data level the image itself
                t_next = torch.full((shape[0],), h_next, device=device, dtype=torch.long)
                known = schedule.q_sample(image, t_next, randn(known_generator))
            else:
                known = image
            if return_intermediates and calls % every == 0:
                xs.append(x.detach().float().cpu())
                x0s.append(x0.detach().float().cpu())
                rec_t.append(h)
            calls += 1
            x = torch.where(keep_out, unknown, known)
    x = x.clone()

    if not return_intermediates:
        return x
    final = x.detach().float().cpu()
    return SampleResult(images=x, xs=torch.stack([*xs, final]), x0s=torch.stack([*x0s, final]),
                        timesteps=torch.tensor([*rec_t, -1], dtype=torch.long), nfe=calls)


# --------------------------------------------------------------------------- latent space
def _dilate(mask: Tensor, cells: int) -> Tensor:
    """Chessboard dilation of a float {0, 1} mask [B, 1, H, W] by ``cells``."""
    if cells == 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * cells + 1, stride=1, padding=cells)


def _as_b1hw(region: Tensor) -> Tensor:
    if region.ndim == 2:
        region = region[None, None]
    elif region.ndim == 3:
        region = region[:, None]
    if region.ndim != 4 or region.shape[1] != 1:
        raise ValueError(f"expected a region of shape [B, 1, H, W], [B, H, W] or [H, W], got "
                         f"{tuple(region.shape)}")
    return region.float()


def latent_region(region: Tensor, size: int | tuple[int, int], *, dilation: int = 1) -> Tensor:
    """Pixel region -> latent-grid region ``[B, 1, h, w]`` (float 0/1), see the module docstring:
    a cell is 1 if any of its pixels is (max pooling over the integer factor H / h), then the
    result is dilated by ``dilation`` cells (chessboard distance)."""
    region = _as_b1hw(region)
    size = (size, size) if isinstance(size, int) else tuple(size)
    h, w = region.shape[-2:]
    if h % size[0] or w % size[1]:
        raise ValueError(f"the latent grid {size[0]}x{size[1]} must divide the image {h}x{w}")
    if int(dilation) != dilation or dilation < 0:
        raise ValueError(f"dilation must be a non-negative integer, got {dilation!r}")
    cells = F.max_pool2d(region, kernel_size=(h // size[0], w // size[1]))
    return _dilate(cells, int(dilation))


def feather_mask(region: Tensor, *, width: int) -> Tensor:
    """Soft paste weight ``[B, 1, H, W]`` in [0, 1]: 1 on the region, 1 - k / (width + 1) at
    chessboard distance k = 1..width outside it, 0 further out (``width = 0``: the region)."""
    if int(width) != width or width < 0:
        raise ValueError(f"feather width must be a non-negative integer, got {width!r}")
    region = _as_b1hw(region)
    weight, ring = region, region
    for k in range(1, int(width) + 1):
        ring = _dilate(ring, 1)
        weight = torch.maximum(weight, ring * (1.0 - k / (width + 1)))
    return weight


def paste_back(generated: Tensor, image: Tensor, region: Tensor, *, feather: int = 0) -> Tensor:
    """``w * generated + (1 - w) * image`` with ``w = feather_mask(region, width=feather)``: the
    original pixels outside the region (exactly, beyond the feather ring), the decode inside."""
    w = feather_mask(region, width=feather).to(device=image.device, dtype=image.dtype)
    return torch.where(w > 0, w * generated + (1.0 - w) * image, image)


def repaint_latent(
    model: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    image: Tensor,
    region: Tensor,
    *,
    encode: Callable[[Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    dilation: int = 1,
    feather: int | None = None,
    **kwargs,
) -> Tensor:
    """RePaint in latent space: z = encode(image) (already scaled as the model expects, e.g.
    ``encode=pipeline.encode, decode=pipeline.decode`` of a latent ``DiffusionPipeline``),
    :func:`repaint` on the latent grid with ``latent_region(region, dilation=...)``, then
    ``paste_back(decode(z), image, region, feather=...)``; ``feather`` defaults to
    ``dilation * factor // 2`` pixels. ``kwargs`` go to :func:`repaint` (not
    ``return_intermediates``)."""
    if kwargs.get("return_intermediates"):
        raise ValueError("repaint_latent returns images only; call repaint() on the latents "
                         "for the chain")
    with torch.inference_mode():
        z = encode(image)
    factor = image.shape[-1] // z.shape[-1]
    cells = latent_region(region, tuple(z.shape[-2:]), dilation=dilation)
    z = repaint(model, schedule, z, cells, **kwargs)
    with torch.inference_mode():
        decoded = decode(z)
    if feather is None:
        feather = dilation * factor // 2
    return paste_back(decoded.to(image.device, image.dtype), image, region, feather=feather)


def border_step(images: Tensor, region: Tensor) -> Tensor:
    """How sharply an inpainted region meets its surroundings: for each image of ``images``
    [B, C, H, W], the mean |x_p - x_q| over the 4-neighbour pixel pairs with p in ``region``
    (1) and q outside it (0). A seam shows as a step larger than the real image's own
    (compare with ``border_step(image, region)``). Returns float [B] (NaN-free: a region
    without a border gives 0)."""
    r = _region_like(region, images).float()
    x = images.float()
    total = torch.zeros(len(x), device=x.device)
    pairs = torch.zeros(len(x), device=x.device)
    for dim in (-1, -2):  # horizontal, then vertical neighbours
        a, b = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
        ra, rb = r.narrow(dim, 0, r.shape[dim] - 1), r.narrow(dim, 1, r.shape[dim] - 1)
        cross = (ra != rb).float()
        total += ((a - b).abs() * cross).flatten(1).sum(1)
        pairs += cross.flatten(1).sum(1)
    return (total / pairs.clamp(min=1)).cpu()
