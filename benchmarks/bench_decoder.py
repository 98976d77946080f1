"""The autoencoder's decoder against the light decoder distilled from it: cost, time, fidelity.

Item 3 of issue 26 ("a lighter decoder distilled from ours"). For ``--model`` (a latent export:
its bundled autoencoder is the full decoder) and ``--decoder`` (a ``train-decoder`` export):

* **parameters** of each decoder (the autoencoder's encoder left out) and **GFLOP per 256x256
  slice**, convolutions only (``oasis_lib.models.lite_decoder.conv_gflops``:
  2 x multiply-adds; normalisations and activations are memory-bound and show only in time);
* **time** to decode 16 latents (``4 x 64 x 64`` each), wall clock, median of ``--repeats``
  after one warm-up, fp32 and, where the CPU has native bf16, bf16 autocast; GFLOP/s from both;
  then both again in ``channels_last`` (NHWC weights and latents);
* **whole samples**: ``pipe.sample(16)`` of ``--model`` with its file's sampling defaults,
  decoded by each decoder, NCHW and channels_last, fp32 and bf16 (the time the goal counts);
* **fidelity** on the validate slices' latents (their posterior means, as a latent model is
  trained on): PSNR (dB, data range 2) and SSIM of the light decoder's images against the full
  decoder's, over the whole slice and inside the brain (tissue masks > 0), and of each against
  the slices themselves (what the autoencoder's reconstruction is worth).

Writes ``--out`` (Markdown with the command and the CPU flags) and a JSON copy beside it::

    OMP_NUM_THREADS=2 python benchmarks/bench_decoder.py \\
        --model checkpoints/demo_ldm256_reflow_ema.safetensors \\
        --decoder checkpoints/demo_lite_decoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch
from bench_latent_sampling import median_s  # benchmarks/ (the script's folder)
from cpu_info import machine_line

from oasis_lib.data import load_splits
from oasis_lib.evaluation.reconstruction import reconstruction_metrics
from oasis_lib.models.lite_decoder import conv_gflops
from oasis_lib.pretrained import load_decoder, load_model
from oasis_lib.seeding import cpu_generator
from oasis_lib.training.precision import cpu_bf16_flags

HERE = Path(__file__).resolve().parent
TIMED_N = 16


@torch.no_grad()
def decode_all(decode, z: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([decode(z[i:i + batch]).float().clamp(-1, 1)
                      for i in range(0, len(z), batch)])


def fidelity(images: torch.Tensor, reference: torch.Tensor, masks: torch.Tensor) -> dict:
    whole = reconstruction_metrics(reference, images)
    brain = reconstruction_metrics(reference, images, brain_mask=masks)
    return {"psnr": float(whole["psnr"]), "ssim": float(whole["ssim"]),
            "psnr_brain": float(brain["psnr"]), "ssim_brain": float(brain["ssim"])}


def whole_samples(pipe, light, repeats: int, bf16: bool) -> list[dict]:
    """Seconds of ``pipe.sample(16)`` with the model file's sampling defaults, decoded by the
    full or the light decoder, with NCHW or channels_last weights, fp32 and bf16."""
    out = []
    for layout in ("NCHW", "channels_last"):
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        for part in (pipe.model, pipe.autoencoder, light):
            part.to(memory_format=fmt)
        for name, decoder in (("full", None), ("light", light)):
            pipe.decoder = decoder
            row = {"decoder": name, "layout": layout}
            for mode in ("fp32", "bf16") if bf16 else ("fp32",):
                def call(mode=mode):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                        pipe.sample(TIMED_N, generator=cpu_generator(0), progress=False)
                row[f"seconds_{mode}"] = median_s(call, repeats)
            out.append(row)
    for part in (pipe.model, pipe.autoencoder, light):
        part.to(memory_format=torch.contiguous_format)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(HERE.parent / "checkpoints" /
                                           "demo_ldm256_reflow_ema.safetensors"))
    ap.add_argument("--decoder", default=str(HERE.parent / "checkpoints" /
                                             "demo_lite_decoder.safetensors"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "decoder.md"))
    args = ap.parse_args(argv)

    pipe = load_model(args.model, device="cpu", decoder=args.decoder)
    full, light = pipe.autoencoder, load_decoder(args.decoder, device="cpu")
    _, val = load_splits(args.data_root, 256, augment=False, with_masks=True)
    x = torch.stack([val[i][0] for i in range(len(val))])
    masks = torch.stack([val[i][1] for i in range(len(val))])
    with torch.no_grad():
        z = torch.cat([full.encode(x[i:i + 16]).mode() for i in range(0, len(x), 16)])
    by_full, by_light = decode_all(full.decode, z), decode_all(light.decode, z)
    rows = {"light vs full decoder": fidelity(by_light, by_full, masks),
            "full decoder vs slices": fidelity(by_full, x, masks),
            "light decoder vs slices": fidelity(by_light, x, masks)}

    bf16 = bool(cpu_bf16_flags())
    z16 = z[:TIMED_N].contiguous()
    cost = {}
    for name, net, decode in (("full", full.decoder, full.decode),
                              ("light", light, light.decode)):
        gflop = conv_gflops(net, z16[:1], lambda m, v, d=decode: d(v))
        entry = {"gflop_per_slice": gflop,  # the decoder's parameters (not the encoder's)
                 "params": sum(p.numel() for p in net.parameters())}
        for layout in ("", "_channels_last"):  # NCHW, then NHWC weights and input
            if layout:
                net.to(memory_format=torch.channels_last)
            zin = z16.contiguous(memory_format=torch.channels_last) if layout else z16
            for mode in ("fp32", "bf16"):
                if mode == "bf16" and not bf16:
                    continue

                def call(decode=decode, mode=mode, zin=zin):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                        decode(zin)
                seconds = median_s(call, args.repeats)
                entry[f"seconds_{mode}{layout}"] = seconds
                entry[f"gflops_{mode}{layout}"] = TIMED_N * gflop / seconds
        net.to(memory_format=torch.contiguous_format)
        cost[name] = entry
    whole = whole_samples(pipe, light, args.repeats, bf16)
    cmd = (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if os.environ.get(
        "OMP_NUM_THREADS") else "") + shlex.join(["python", "benchmarks/bench_decoder.py", *argv])
    lines = ["# The autoencoder's decoder and the light decoder distilled from it", "",
             f"Command: `{cmd}`", "", f"Machine: {machine_line()}; load average "
             f"{os.getloadavg()[0]:.2f} at the end", "",
             f"Time to decode {TIMED_N} latents (4 x 64 x 64 -> 1 x 256 x 256), median of "
             f"{args.repeats} after a warm-up; GFLOP of the convolutions per slice.", "",
             "| decoder | parameters | GFLOP / slice | s fp32 | GFLOP/s fp32 | s bf16 | "
             "GFLOP/s bf16 |", "|---|---|---|---|---|---|---|"]
    for name, e in cost.items():
        b = (f"{e['seconds_bf16']:.3f} | {e['gflops_bf16']:.0f}" if "seconds_bf16" in e
             else "no native bf16 | -")
        lines.append(f"| {name} | {e['params']:,} | {e['gflop_per_slice']:.2f} | "
                     f"{e['seconds_fp32']:.3f} | {e['gflops_fp32']:.0f} | {b} |")
    lines += ["", "The same in channels_last (weights and latents in NHWC, "
              "`torch.channels_last`):", "", "| decoder | s fp32 | s bf16 |", "|---|---|---|"]
    for name, e in cost.items():
        b = f"{e['seconds_bf16_channels_last']:.3f}" if "seconds_bf16" in e else "-"
        lines.append(f"| {name} | {e['seconds_fp32_channels_last']:.3f} | {b} |")
    d = pipe.sampling_defaults
    said = "the process's default sampler" if d is None else f"{d.sampler}, {d.steps} steps, " \
        f"{d.spacing} grid (the file's defaults)"
    lines += ["", f"Whole `pipe.sample({TIMED_N})` of {Path(args.model).name} ({said}), "
              "decoding included, seconds:", "",
              "| decoder | layout | s fp32 | s bf16 |", "|---|---|---|---|"]
    for r in whole:
        b = f"{r['seconds_bf16']:.3f}" if "seconds_bf16" in r else "-"
        lines.append(f"| {r['decoder']} | {r['layout']} | {r['seconds_fp32']:.3f} | {b} |")
    lines += ["", f"Fidelity on the {len(x)} validate slices' latents (posterior means): PSNR "
              "(dB, data range 2) and SSIM, whole slice and inside the brain (masks > 0).", "",
              "| images vs reference | PSNR | SSIM | PSNR brain | SSIM brain |",
              "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['psnr_brain']:.2f} | "
                     f"{r['ssim_brain']:.4f} |")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(
        {"command": cmd, "machine": machine_line(), "cost": cost, "fidelity": rows,
         "whole_samples": whole}, indent=1))
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
