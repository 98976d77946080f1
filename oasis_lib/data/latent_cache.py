"""Encode a dataset once, keep its latents on disk, never reuse them when anything changed.

Training a latent diffusion model reads every slice hundreds of times; running the encoder each
time would cost more than the diffusion U-Net on the small latents. :func:`cached_latents`
encodes the dataset once and stores ``float32 [N, c, h, w]`` latents in a safetensors file whose
name and metadata carry a **key**, the SHA-256 of

* the autoencoder's content hash (:func:`autoencoder_hash`: its config and every tensor of its
  state dict, bytes, dtype and shape, except ``scale_factor``), and
* the data manifest (:func:`dataset_manifest`: each image file's path relative to the data
  root, its size and the SHA-256 of its bytes, the image size and the split),
* what is stored (``use`` and, for samples, the seed).

A retrained autoencoder, a re-exported PNG, an added or removed slice or another image size give
another key, hence another file: stale latents are never loaded. Old files are not deleted
(train and validate latents share a folder); remove the folder to reclaim space.

What is stored: the **posterior mean** by default. It is deterministic (the same image always has
the same latent, so the cache is well defined), and with LDM's tiny KL weight the posterior std
is small next to the spread of the means, so a draw differs little from it. LDM instead draws
``z ~ q(z | x)`` afresh each time it sees an image, a small augmentation at the scale of that
std; ``use="sample"`` stores one such draw (seeded, and the seed is part of the key).

Latents are stored **unscaled**: multiply by ``autoencoder.scale_factor`` before diffusion.
That is why the scale factor is left out of the hash: setting it after training (it is
computed from these very latents) must not invalidate them. Images are the dataset's untransformed
slices (``dataset.raw``, mapped to [-1, 1] as ``OASISDataset`` does); augmentations (flips) are
not applied.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import ConcatDataset, Dataset
from tqdm.auto import tqdm

__all__ = ["CACHE_USES", "CachedLatents", "autoencoder_hash", "cached_latents",
           "dataset_manifest", "encode_dataset"]

CACHE_USES = ("mean", "sample")
CACHE_FORMAT = 1  # bump when the stored layout changes: old files are then never matched
_EXCLUDED = ("scale_factor",)  # state-dict entries that do not change the latents


def _oasis_parts(dataset: Dataset) -> list:
    """The OASISDataset(s) inside ``dataset`` (itself, or the members of a ConcatDataset)."""
    if isinstance(dataset, ConcatDataset):
        return [p for d in dataset.datasets for p in _oasis_parts(d)]
    if not hasattr(dataset, "items") or not hasattr(dataset, "root"):
        raise ValueError(f"cannot cache latents of a {type(dataset).__name__}: expected an "
                         "OASISDataset (with .items and .root) or a ConcatDataset of them")
    return [dataset]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_manifest(dataset: Dataset) -> dict:
    """What identifies a dataset's images: ``{"parts": [{"split", "image_size", "files"}]}``
    with ``files`` a list of ``[path relative to the data root, size in bytes, sha256]``.

    The split is read from the folder name (``keras_png_slices_{split}``); the data root is
    the folder holding it, so moving the whole tree does not change the manifest."""
    parts = []
    for part in _oasis_parts(dataset):
        root = Path(part.root)
        split = root.name.removeprefix("keras_png_slices_")
        size = tuple(part.size or part.native_size)
        files = [[p.relative_to(root.parent).as_posix(), p.stat().st_size, _sha256_file(p)]
                 for _, _, p, _ in part.items]
        parts.append({"split": split, "image_size": [int(s) for s in size], "files": files})
    return {"parts": parts}


def autoencoder_hash(autoencoder: torch.nn.Module) -> str:
    """SHA-256 of the autoencoder's config and state-dict tensors (names, dtypes, shapes and
    bytes), ``scale_factor`` excluded (it does not change the encoder's output)."""
    h = hashlib.sha256()
    config = getattr(autoencoder, "config", None)
    h.update(json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config),
                        sort_keys=True).encode())
    for name, tensor in sorted(autoencoder.state_dict().items()):
        if name in _EXCLUDED:
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 1-d: view(uint8) needs a dim
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _images(part, start: int, stop: int) -> torch.Tensor:
    """Untransformed images ``float32 [n, 1, H, W]`` in [-1, 1] (``x / 127.5 - 1``)."""
    if getattr(part, "images", None) is not None:
        stack = part.images[start:stop, None]
    else:
        stack = torch.stack([part.raw(i)[0] for i in range(start, stop)])
    return stack.float() / 127.5 - 1.0


@torch.no_grad()
def encode_dataset(autoencoder: torch.nn.Module, dataset: Dataset, *, use: str = "mean",
                   seed: int | None = None, batch_size: int = 32,
                   progress: bool = False) -> torch.Tensor:
    """Unscaled latents ``float32 [N, c, h, w]`` (CPU) of every image of ``dataset``, in order:
    the posterior mean (``use="mean"``) or one draw seeded by ``seed`` (``use="sample"``)."""
    if use not in CACHE_USES:
        raise ValueError(f"unknown use {use!r}; choose one of {CACHE_USES}")
    if use == "sample" and seed is None:
        raise ValueError("use='sample' needs seed= (an int), so that the cache is reproducible")
    generator = torch.Generator().manual_seed(seed) if use == "sample" else None
    device = next(autoencoder.parameters()).device
    was_training = autoencoder.training
    autoencoder.eval()
    out = []
    try:
        parts = _oasis_parts(dataset)
        total = sum(len(p) for p in parts)
        with tqdm(total=total, desc="encoding", disable=not progress) as bar:
            for part in parts:
                for start in range(0, len(part), batch_size):
                    stop = min(start + batch_size, len(part))
                    posterior = autoencoder.encode(_images(part, start, stop).to(device))
                    z = posterior.sample(generator) if use == "sample" else posterior.mode()
                    out.append(z.float().cpu())
                    bar.update(stop - start)
    finally:
        autoencoder.train(was_training)
    return torch.cat(out)


@dataclass
class CachedLatents:
    """What :func:`cached_latents` returns: the latents and where they came from."""

    latents: torch.Tensor  # float32 [N, c, h, w], unscaled
    path: Path  # the safetensors file
    key: str  # SHA-256 of (autoencoder hash, manifest, use, seed, format)
    hit: bool  # True when read from disk, False when just encoded


def cached_latents(autoencoder: torch.nn.Module, dataset: Dataset, cache_dir: str | os.PathLike,
                   *, use: str = "mean", seed: int | None = None, batch_size: int = 32,
                   progress: bool = False) -> CachedLatents:
    """The latents of ``dataset`` from ``cache_dir`` if a file with the same key is there,
    else encoded (:func:`encode_dataset`) and written (atomically) for the next run.

    Files are ``latents-<key[:24]>.safetensors`` with the full key, the autoencoder hash and
    the number of items in their metadata, and a ``.json`` next to it with the manifest (for
    people; the key is what is checked).
    """
    if use not in CACHE_USES:
        raise ValueError(f"unknown use {use!r}; choose one of {CACHE_USES}")
    manifest = dataset_manifest(dataset)
    ae_hash = autoencoder_hash(autoencoder)
    ident = {"format": CACHE_FORMAT, "autoencoder": ae_hash, "manifest": manifest, "use": use,
             "seed": seed if use == "sample" else None}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    cache_dir = Path(cache_dir)
    path = cache_dir / f"latents-{key[:24]}.safetensors"
    n = sum(len(p["files"]) for p in manifest["parts"])
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            if meta.get("key") == key and int(meta.get("n", -1)) == n:
                return CachedLatents(load_file(str(path))["latents"], path, key, hit=True)
        except Exception:  # unreadable or truncated: encode again
            pass
    latents = encode_dataset(autoencoder, dataset, use=use, seed=seed, batch_size=batch_size,
                             progress=progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"latents": latents.contiguous()}, str(tmp),
              metadata={"key": key, "autoencoder": ae_hash, "n": str(n), "use": use})
    os.replace(tmp, path)
    summary = {**ident, "manifest": {"parts": [
        {"split": p["split"], "image_size": p["image_size"], "files": len(p["files"])}
        for p in manifest["parts"]]}, "key": key, "shape": list(latents.shape)}
    path.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    return CachedLatents(latents, path, key, hit=False)
