"""One round of reflow: the teacher's (noise, sample) pairs, cached on disk, and their datasets.

Liu et al. 2022 ("Flow Straight and Fast", sec. 2.2 and 3, "reflow"): the (k+1)-rectified flow is
trained with the same straight-path loss as the first, but on coupled pairs
``(X0, X1) = (z, Z1(z))``, z ~ N(0, I) and ``Z1(z)`` the k-rectified flow's ODE solution from z,
instead of independent noise and data. Each pair's straight line crosses no other pair's
(the teacher's ODE paths do not cross), so the new flow's paths are straighter and a few Euler
steps go further. In this library's convention (:mod:`oasis_lib.diffusion.flow_matching`: t = 1
is noise) a pair is ``(noise = z, sample = x0)`` and the loss is the rectified-flow loss with
that noise as eps and that sample as x0: x_t = (1 - t) x0 + t eps, target v = eps - x0.

* :func:`generate_pairs` writes the pairs of a latent rectified-flow teacher (model space,
  float32) as shards ``pairs_00000.safetensors``, ... (tensors ``noise`` and ``sample``), with
  a ``pairs.json`` manifest (:func:`pairs_manifest`). Shard k's noise is drawn from a generator
  seeded by ``(seed, k)`` (:func:`shard_seed`) and each shard is written atomically, so a stop
  loses at most the shard in progress and a re-run skips the finished ones and writes the same
  bytes (the teacher and the sampler are deterministic).
* :func:`read_pairs` and :func:`reflow_datasets` read them back: the training set (named items
  ``{"image": sample, "noise": noise}``) and, held out, the last shard as the validation set.
* :func:`check_reflow_run` ties a run (``TrainConfig.reflow_pairs``) to its pairs: the run's
  autoencoder must be the teacher's and its scale factor the teacher's (the pairs live in that
  model space); the Trainer then trains through the same loop (``training.trainer``).

The training times are the run's noise process's: uniform, logit-normal, or the U-shaped
density that Lee et al. 2024 ("Improving the Training of Rectified Flows") propose for
reflow (``--time-sampling u-shaped``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..checkpoint import state_sha256
from ..data.conditional import NamedTensors
from ..diffusion.sampling import sample
from ..diffusion.sampling_defaults import SamplingDefaults, resolve_sampling
from ..pretrained_autoencoder import autoencoder_sha256
from ..seeding import cpu_generator
from .run_dir import write_text_atomic

__all__ = ["MANIFEST_NAME", "REFLOW_PROCESS", "check_reflow_run", "check_teacher",
           "generate_pairs", "pairs_manifest", "read_manifest", "read_pairs", "reflow_datasets",
           "shard_name", "shard_seed"]

MANIFEST_NAME = "pairs.json"
REFLOW_PROCESS = "rectified-flow"  # the noise process reflow straightens
SEED_STRIDE = 1_000_003  # shard k of seed s draws from seed s * SEED_STRIDE + k
MANIFEST_VERSION = 1


def shard_name(k: int) -> str:
    """``pairs_00000.safetensors`` for shard 0."""
    return f"pairs_{k:05d}.safetensors"


def shard_seed(seed: int, k: int) -> int:
    """The seed of shard ``k``'s noise generator (one generator per shard: shards are
    independent of each other and of the order they are written in)."""
    return int(seed) * SEED_STRIDE + int(k)


def check_teacher(pipe) -> None:
    """Refuse a teacher reflow cannot use: another noise process than rectified flow, a
    pixel-space model, or a conditional one (ValueError naming what it is)."""
    name = pipe.process.name
    if name != REFLOW_PROCESS:
        raise ValueError(f"reflow needs a {REFLOW_PROCESS} teacher; this model's noise process "
                         f"is {name!r} (train one with --noise-process {REFLOW_PROCESS})")
    if pipe.autoencoder is None:
        raise ValueError("reflow pairs are made for a latent model; this teacher is "
                         "pixel-space (no autoencoder)")
    if pipe.condition is not None:
        raise ValueError(f"reflow pairs are made for an unconditional teacher; this one is "
                         f"conditional ({pipe.condition})")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def pairs_manifest(pipe, *, n: int, steps: int, sampler: str, seed: int,
                   shard_size: int) -> dict:
    """What a pair directory holds, and of which teacher: the U-Net's content hash
    (:func:`~oasis_lib.checkpoint.state_sha256`, weights at fp16), its autoencoder's and scale
    factor, the process, the sampler and steps, the seed, the shard size and n."""
    return {
        "version": MANIFEST_VERSION,
        "teacher_sha256": state_sha256(pipe.model.state_dict()),
        "autoencoder_sha256": autoencoder_sha256(pipe.autoencoder),
        "scale_factor": float(pipe.scale_factor),
        "noise_process": repr(pipe.process),
        "prediction_type": pipe.prediction_type,
        "sample_shape": list(pipe.sample_shape),
        "sampler": sampler, "steps": int(steps), "seed": int(seed),
        "shard_size": int(shard_size), "n": int(n),
        "shards": math.ceil(n / shard_size),
    }


def read_manifest(directory: str | os.PathLike) -> dict:
    """The ``pairs.json`` of a pair directory (FileNotFoundError naming the command that
    writes it)."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no reflow pairs in {directory} ({MANIFEST_NAME} missing); "
                                "write them with: python -m oasis_lib reflow-pairs --checkpoint "
                                f"TEACHER.safetensors --n N --out {directory}")
    return json.loads(path.read_text())


def generate_pairs(pipe, out_dir: str | os.PathLike, n: int, *, steps: int = 20,
                   sampler: str | None = None, shard_size: int = 64, seed: int = 0,
                   progress: bool = True) -> Path:
    """Write ``n`` reflow pairs ``(noise, sample)`` of the teacher ``pipe`` to ``out_dir``.

    Args:
        pipe (DiffusionPipeline): an unconditional latent rectified-flow model (the teacher).
        out_dir: the pair directory (created); a directory with a manifest continues it.
        n (int): number of pairs.
        steps (int, default 20): the teacher's sampler steps (network-call intervals).
        sampler (str or None): one of the process's samplers; None: the model file's default
            sampler, else the process's (``flow-euler``).
        shard_size (int, default 64): pairs per shard (the last shard may be smaller).
        seed (int, default 0): shard k's noise is ``randn`` from the seed ``shard_seed(seed,
            k)`` (CPU float32).
        progress (bool): a bar over the shards.

    Each shard holds float32 ``noise`` and ``sample`` ``[B, *pipe.sample_shape]`` in model
    space (``sample`` is :func:`~oasis_lib.diffusion.sampling.sample` of the teacher from
    ``x_T = noise``, unclipped: what ``pipe.sample`` decodes). A finished shard is skipped, so a
    re-run resumes; a manifest that disagrees with the call (another teacher, sampler, steps,
    seed, shard size or n) is refused with the keys that differ.

    Returns:
        The directory.
    """
    check_teacher(pipe)
    n, steps = _positive_int(n, "n"), _positive_int(steps, "steps")
    shard_size = _positive_int(shard_size, "shard_size")
    sampler = resolve_sampling(pipe.sampling_defaults, pipe.process, sampler, steps).sampler
    SamplingDefaults(sampler, steps).check(pipe.process)  # its process's sampler, its steps
    manifest = pairs_manifest(pipe, n=n, steps=steps, sampler=sampler, seed=seed,
                              shard_size=shard_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST_NAME).is_file():
        old = read_manifest(out)
        differ = [f"{k} {old.get(k)!r} (on disk) vs {manifest[k]!r}" for k in manifest
                  if old.get(k) != manifest[k]]
        if differ:
            raise ValueError(f"{out} holds reflow pairs of another call: "
                             f"{'; '.join(differ)}; choose another directory or repeat the "
                             "first call's options")
    else:
        write_text_atomic(out / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
    todo = [k for k in range(manifest["shards"]) if not (out / shard_name(k)).is_file()]
    net = pipe.denoiser()
    bar = tqdm(total=manifest["shards"], initial=manifest["shards"] - len(todo),
               desc="reflow pairs (shards)", disable=not progress)
    for k in todo:
        b = min(shard_size, n - k * shard_size)
        noise = torch.randn((b, *pipe.sample_shape), generator=cpu_generator(shard_seed(seed, k)),
                            dtype=torch.float32)
        x0 = sample(net, pipe.process, tuple(noise.shape), sampler=sampler, steps=steps,
                    prediction_type=pipe.prediction_type, clip_x0=False, x_T=noise,
                    device=pipe.device, progress=False)
        _write_shard(out / shard_name(k), noise, x0.float().cpu(), index=k)
        bar.update(1)
    bar.close()
    return out


def _write_shard(path: Path, noise: torch.Tensor, x0: torch.Tensor, *, index: int) -> None:
    """One shard, written to a temporary file and renamed (never half-written)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"noise": noise.contiguous(), "sample": x0.contiguous()}, str(tmp),
              metadata={"shard": str(index)})
    os.replace(tmp, path)


def read_pairs(directory: str | os.PathLike) -> tuple[dict, list[tuple[torch.Tensor, ...]]]:
    """The manifest and every shard's ``(noise, sample)``, in order; refuses an unfinished
    directory (naming the missing shards and how to finish it) and a shard of another shape."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    missing = [k for k in range(manifest["shards"]) if not (directory / shard_name(k)).is_file()]
    if missing:
        raise ValueError(f"{directory} holds {manifest['shards'] - len(missing)} of "
                         f"{manifest['shards']} reflow shards (missing: "
                         f"{', '.join(shard_name(k) for k in missing[:3])}"
                         f"{', ...' if len(missing) > 3 else ''}); finish them by running "
                         "the same reflow-pairs command again")
    shards, shape = [], tuple(manifest["sample_shape"])
    for k in range(manifest["shards"]):
        with safe_open(str(directory / shard_name(k)), framework="pt") as f:
            noise, x0 = f.get_tensor("noise"), f.get_tensor("sample")
        b = min(manifest["shard_size"], manifest["n"] - k * manifest["shard_size"])
        if noise.shape != (b, *shape) or x0.shape != noise.shape:
            raise ValueError(f"{directory / shard_name(k)}: expected noise and sample of shape "
                             f"{(b, *shape)}, got {tuple(noise.shape)} and {tuple(x0.shape)}")
        shards.append((noise, x0))
    return manifest, shards


def reflow_datasets(directory: str | os.PathLike) -> tuple[NamedTensors, NamedTensors, dict]:
    """``(train, validate, manifest)``: named items ``{"image": sample, "noise": noise}``; the
    last shard is held out for validation (so at least two shards are needed)."""
    manifest, shards = read_pairs(directory)
    if len(shards) < 2:
        raise ValueError(f"{directory} holds one shard of reflow pairs; training holds the "
                         "last shard out for validation, so write at least two (--n larger "
                         "than --shard-size)")
    train = [torch.cat(parts) for parts in zip(*shards[:-1], strict=True)]
    noise, x0 = shards[-1]
    return (NamedTensors(image=train[1], noise=train[0]), NamedTensors(image=x0, noise=noise),
            manifest)


def check_reflow_run(config, pipeline, manifest: dict, *, directory: str) -> None:
    """A run trains on its pairs' model space: refuse another autoencoder, another noise
    process or a scale factor other than the teacher's; without one, take the teacher's (in
    ``config.latent_scale_factor`` and ``pipeline.scale_factor``)."""
    if pipeline.autoencoder is None:
        raise ValueError(f"--reflow-pairs {directory}: reflow trains a latent model; give "
                         "--init-from TEACHER.safetensors (or --autoencoder) so the run is "
                         "latent")
    if pipeline.process.name != REFLOW_PROCESS:
        raise ValueError(f"--reflow-pairs {directory}: the run's noise process is "
                         f"{pipeline.process.name!r}; reflow trains --noise-process "
                         f"{REFLOW_PROCESS}")
    shape = tuple(manifest["sample_shape"])
    if tuple(pipeline.sample_shape) != shape:
        raise ValueError(f"--reflow-pairs {directory}: pairs of shape {shape}, the run's "
                         f"latents {tuple(pipeline.sample_shape)} (--image-size?)")
    if autoencoder_sha256(pipeline.autoencoder) != manifest["autoencoder_sha256"]:
        raise ValueError(f"--reflow-pairs {directory} were made with another autoencoder than "
                         "the run's; train from the teacher (--init-from TEACHER) without "
                         "--autoencoder")
    s = manifest["scale_factor"]
    if config.latent_scale_factor is None:
        config.latent_scale_factor = s
    elif not math.isclose(config.latent_scale_factor, s, rel_tol=1e-6):
        raise ValueError(f"--reflow-pairs {directory} are in the teacher's model space (scale "
                         f"factor {s:.6g}); the run's is {config.latent_scale_factor:.6g}")
    pipeline.scale_factor = config.latent_scale_factor
