"""Which autoencoder for latent diffusion at 256x256? Cost of the candidates (a benchmark).

For each candidate config (f=4 and f=8, several latent channel counts) it prints one Markdown
row: parameters; GFLOP per 256x256 image for encode and for decode (counted by
``torch.utils.flop_counter.FlopCounterMode``; one multiply-add = 2 FLOP); encode+decode
milliseconds per image (batch 16, fp32, ``torch.inference_mode``, median of ``--repeats`` timed
runs after one warm-up); the latent shape; and the cost of the ``cpu`` diffusion U-Net preset on
that latent (GFLOP per forward, the unit a sampler pays per step and image); and the total of
issue 11's speed target, 16 slices with 20 sampler steps plus their decoding
(``16 x (20 x U-Net + decode)`` GFLOP).

With ``--checkpoints`` (trained autoencoders: safetensors with the config in the metadata, or
a ``.pt`` training checkpoint) it adds their reconstruction quality on validate slices at
256x256: PSNR and SSIM inside the brain (tissue masks > 0) and the shipped segmenter's mean
tissue Dice on the reconstructions next to its Dice on the originals (both at the segmenter's
64x64). Issue 11's goal for the ``cpu`` autoencoder: PSNR >= 30 dB, SSIM >= 0.90, Dice within
0.02. Next to them, the texture the reconstructions keep (:mod:`oasis_lib.evaluation.texture`,
paired: each reconstruction against its own slice, inside the slice's brain mask): the ratio
of mean |Laplacian| (median and worst over the slices) and of the share of spectral energy
above 0.25 cycles/pixel (median). The goal we set: |Laplacian| >= 0.9x, HF share >= 0.8x.
``--labels`` names the checkpoints in the table (default: their paths); ``--skip-cost`` prints
the reconstruction table only.

Run it on an otherwise idle machine; other processes on the same cores make the times wrong.

    python benchmarks/bench_autoencoder.py --repeats 3
    python benchmarks/bench_autoencoder.py --candidates f4c4 f8c4 --checkpoints runs/ae/best.pt
    python benchmarks/bench_autoencoder.py --skip-cost --n 64 \
        --checkpoints checkpoints/demo_ae256_plain.safetensors checkpoints/demo_ae256.safetensors \
        --labels "no critic" "critic"
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from oasis_lib.models.autoencoder import AutoencoderConfig, AutoencoderKL

SIZE = 256
CANDIDATES: dict[str, AutoencoderConfig] = {
    **{f"f4c{c}": AutoencoderConfig(channel_mult=(1, 2, 4), latent_channels=c)
       for c in (2, 3, 4, 8)},
    **{f"f8c{c}": AutoencoderConfig(channel_mult=(1, 2, 4, 4), latent_channels=c)
       for c in (4, 8)},
    "f8c4-narrow": AutoencoderConfig(channel_mult=(1, 2, 2, 4), latent_channels=4),
}


def cpu_flags() -> str:
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(shown) or "unknown"


def gflop(fn, *args) -> float:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() / 1e9


def unet_gflop(latent: tuple[int, int, int]) -> float:
    from oasis_lib import UNet, UNetConfig

    c, h, _ = latent
    unet = UNet(UNetConfig.preset("cpu", image_size=h, in_channels=c, out_channels=c)).eval()
    with torch.inference_mode():
        return gflop(unet, torch.zeros(1, c, h, h), torch.zeros(1, dtype=torch.long))


def time_ms(ae: AutoencoderKL, batch: int, repeats: int) -> float:
    x = torch.rand(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            ae.decode(ae.encode(x).mode())
            if i:  # the first run is a warm-up
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times) / batch


def cost_row(name: str, ae: AutoencoderKL, batch: int, repeats: int) -> str:
    ae.eval()
    params = sum(p.numel() for p in ae.parameters())
    latent = ae.config.latent_shape(SIZE)
    with torch.inference_mode():
        enc = gflop(ae.encode, torch.zeros(1, 1, SIZE, SIZE))
        dec = gflop(ae.decode, torch.zeros(1, *latent))
    ms = time_ms(ae, batch, repeats) if repeats > 0 else float("nan")
    shape = "x".join(str(v) for v in latent)
    unet = unet_gflop(latent)
    return (f"| {name} | {ae.downsampling_factor} | {params / 1e6:.3f} | {enc:.2f} | {dec:.2f} | "
            f"{ms:.0f} | {shape} | {unet:.2f} | {16 * (20 * unet + dec):.0f} |")


def quality_row(path: Path, n: int, data_root, batch: int, label: str | None = None) -> str:
    from oasis_lib import load_split
    from oasis_lib.evaluation.reconstruction import reconstruction_metrics
    from oasis_lib.evaluation.segmenter import dice_per_class, load_segmenter
    from oasis_lib.evaluation.texture import texture_ratios
    from oasis_lib.pretrained import load_autoencoder

    ae = load_autoencoder(path, device="cpu")
    val = load_split("validate", data_root, image_size=SIZE, with_masks=True, augment=False)
    idx = torch.linspace(0, len(val) - 1, min(n, len(val))).round().long().unique()
    seg = load_segmenter(device="cpu")
    psnr, ssim, recon_all, orig_all, masks_all = [], [], [], [], []
    with torch.inference_mode():
        for start in range(0, len(idx), batch):
            items = [val[int(i)] for i in idx[start:start + batch]]
            x = torch.stack([im for im, _ in items])
            masks = torch.stack([m for _, m in items])
            recon = ae.decode(ae.encode(x).mode()).clamp(-1, 1)
            out = reconstruction_metrics(x, recon, brain_mask=masks)
            psnr += out["psnr_per_image"]
            ssim += out["ssim_per_image"]
            recon_all.append(recon)
            orig_all.append(x)
            masks_all.append(masks)
        size = seg.config.image_size

        def small(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
        masks = F.interpolate(torch.cat(masks_all)[:, None].float(), size=(size, size),
                              mode="nearest")[:, 0].long()
        dice_o = dice_per_class(seg.predict(small(torch.cat(orig_all))), masks)[1:].mean()
        dice_r = dice_per_class(seg.predict(small(torch.cat(recon_all))), masks)[1:].mean()
    brain = torch.cat(masks_all)  # the real slice's mask for both images of a pair
    tex = texture_ratios(torch.cat(orig_all), torch.cat(recon_all), brain, brain, paired=True)
    return (f"| {label or path} | {len(psnr)} | {statistics.mean(psnr):.2f} | "
            f"{statistics.mean(ssim):.4f} | {float(dice_o):.4f} | {float(dice_r):.4f} | "
            f"{tex['laplacian_ratio_median']:.2f} | {tex['laplacian_ratio_worst']:.2f} | "
            f"{tex['hf_share_ratio_median']:.2f} |")


def cost_table(candidates: list[str], batch: int, repeats: int) -> None:
    print(f"\nAutoencoder cost at {SIZE}x{SIZE}, fp32, batch {batch}, median of "
          f"{repeats} runs\n")
    print("| config | f | params (M) | encode GFLOP | decode GFLOP | enc+dec ms/image | latent "
          "| cpu U-Net GFLOP/forward | 16 samples x 20 steps + decode, GFLOP |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in candidates:
        if name in CANDIDATES:
            config = CANDIDATES[name]
        else:
            config = AutoencoderConfig.preset(name)  # raises, naming the valid presets
        torch.manual_seed(0)
        print(cost_row(name, AutoencoderKL(config), batch, repeats), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES),
                        help=f"configs to measure, from {list(CANDIDATES)} and the presets "
                             "tiny/cpu/gpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (0: FLOPs only)")
    parser.add_argument("--checkpoints", nargs="*", type=Path, default=[])
    parser.add_argument("--data-root", default=None, help="default: $OASIS_DATA or demo data")
    parser.add_argument("--labels", nargs="*", default=None,
                        help="one name per checkpoint for the table (default: the paths)")
    parser.add_argument("--n-val", "--n", dest="n_val", type=int, default=64,
                        help="validate slices per checkpoint (spread evenly over the split)")
    parser.add_argument("--skip-cost", action="store_true",
                        help="skip the cost table (FLOPs, times): reconstruction quality only")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.checkpoints):
        parser.error(f"--labels needs one name per checkpoint: {len(args.checkpoints)} "
                     f"checkpoint(s), {len(args.labels)} label(s)")
    labels = args.labels or [None] * len(args.checkpoints)

    print(f"torch {torch.__version__}, {platform.machine()}, CPU flags: {cpu_flags()}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {torch.get_num_threads()}")
    if not args.skip_cost:
        cost_table(args.candidates, args.batch, args.repeats)
    if args.checkpoints:
        print(f"\nReconstruction on validate at {SIZE}x{SIZE} (inside the brain; Dice of the "
              "shipped segmenter at 64x64, mean over CSF/grey/white; texture: recon / its "
              "original, |Laplacian| median and worst, share of energy above 0.25 cycles/pixel "
              "median)\n")
        print("| checkpoint | slices | PSNR (dB) | SSIM | Dice originals | Dice recon | "
              "\\|Lap\\| ratio | \\|Lap\\| worst | HF share ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for path, label in zip(args.checkpoints, labels, strict=True):
            print(quality_row(path, args.n_val, args.data_root, args.batch, label), flush=True)


if __name__ == "__main__":
    main()
