"""Offline demo dataset in the exact OASIS layout, synthesised from the MNI ICBM152 template.

The real OASIS slices cannot be redistributed here, so each synthetic "case" is the MNI ICBM152
2009a symmetric T1 template (Fonov et al. 2009, 2011; shipped inside the ``nilearn`` package, read
with nibabel, no network) seen through a random smooth deformation and a random scanner:

1. geometry: a small affine (rotation of a few degrees, scale +-5 %, shift of a few mm), a smooth
   elastic displacement (a random sum of low-frequency cosines, the discrete-cosine basis of
   Ashburner & Friston 1999) and a random ventricle enlargement (atrophy);
2. sampling: the T1, grey- and white-matter maps are stacked as channels and sampled at the 32
   axial output planes at once with ``torch.nn.functional.grid_sample``;
3. masks: brain = T1 above a threshold; white if the WM probability is the largest of
   (CSF = 1 - GM - WM, GM, WM), grey if GM is, CSF otherwise; written as 0/85/170/255;
4. intensity: a piecewise-linear curve mapping template CSF/GM/WM to OASIS-like grey levels
   (jittered), a smooth multiplicative bias field, gamma jitter and mild Gaussian noise;
   background exactly 0, as in the skull-stripped OASIS slices.

Slices are radiological axial views (nose at the top, patient's right on the image left),
256x256 at 0.9 mm per pixel, 32 planes 2 mm apart from MNI z = -8 mm (top of the cerebellum)
to z = +54 mm (upper cortex).
Each case is seeded from (seed, case id), so a build is byte-for-byte reproducible.

Template copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal
Neurological Institute, McGill University; see data/README.md for the full notice.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .layout import (
    SLICES_PER_CASE,
    SPLITS,
    default_demo_root,
    image_dir,
    image_name,
    mask_dir,
    mask_name,
)

DEMO_VERSION = 1
MANIFEST = "demo_manifest.json"
FIRST_CASE = {"train": 1, "validate": 402, "test": 441}
MAX_CASES = {"train": 401, "validate": 39, "test": 559}  # ids stay below the next split, 3 digits
TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
SIZE = 256  # output pixels per side
PIXEL_MM = 0.9  # output pixel size: the brain fills ~75 % of the frame
PLANES_MM = np.linspace(-8.0, 54.0, SLICES_PER_CASE)  # MNI z of the 32 axial planes, 2 mm apart
CENTRE_MM = np.array([0.0, -18.0, 20.0])  # x, y, z of the frame centre / rotation centre
VENTRICLES_MM = np.array([0.0, -8.0, 14.0])  # centre of the lateral ventricles
COARSE = 65  # deformation and bias fields are computed on a 65x65 grid per plane
TEMPLATE_WEIGHT = 0.5  # intensity = this * template T1 curve + the rest * tissue model
BRAIN_T1 = 40.0  # template T1 above this is brain (the template is skull-stripped, CSF ~ 76)


def template_paths() -> dict[str, Path]:
    """Locate the MNI ICBM152 2009a maps shipped in nilearn's package data (no import, no net)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nilearn is not installed; it ships the MNI template the demo needs")
    package = Path(next(iter(spec.submodule_search_locations)))
    paths = {}
    for key, name in TEMPLATE_FILES.items():
        path = package / "datasets" / "data" / name
        if not path.is_file():
            path = next(package.rglob(name), None)
        if path is None:
            raise RuntimeError(f"{name} not found inside the nilearn package at {package}")
        paths[key] = path
    return paths


@functools.lru_cache(maxsize=1)
def load_template() -> dict:
    """Template volume [3, Z, Y, X] (T1 0..255, GM 0..1, WM 0..1), cropped around the planes,
    with its voxel grid in MNI mm and the median T1 of CSF, GM and WM. Cached: do not modify."""
    import nibabel as nib

    images = {k: nib.load(str(p)) for k, p in template_paths().items()}
    affine = images["t1"].affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))):
        raise RuntimeError("expected an axis-aligned template affine")
    arrays = {k: np.asarray(im.dataobj) for k, im in images.items()}
    t1, gm, wm = arrays["t1"].astype(np.float32), arrays["gm"] / 255.0, arrays["wm"] / 255.0
    brain = t1 > BRAIN_T1
    csf = np.clip(1 - gm - wm, 0, 1)
    levels = [float(np.median(t1[brain & (p > thr)]))
              for p, thr in ((csf, 0.8), (gm, 0.8), (wm, 0.9))]
    step, origin = np.diag(affine[:3, :3]), affine[:3, 3]
    k = np.round((np.array([PLANES_MM[0] - 30, PLANES_MM[-1] + 30]) - origin[2]) / step[2])
    k0, k1 = int(max(k.min(), 0)), int(min(k.max() + 1, t1.shape[2]))
    stack = np.stack([t1, gm, wm])[..., k0:k1].astype(np.float32)  # [3, X, Y, Z]
    volume = torch.from_numpy(stack).permute(0, 3, 2, 1).contiguous()  # [3, Z, Y, X]
    origin = origin + np.array([0, 0, k0]) * step
    return {"volume": volume, "origin": origin, "step": step, "levels": levels}


def _cosine_field(rng: np.random.Generator, order: int, channels: int,
                  coords: tuple[np.ndarray, np.ndarray, np.ndarray], rms: float,
                  length: float = 200.0) -> np.ndarray:
    """Smooth random field [Z, Y, X, channels] (float64) of RMS ``rms`` on the grid ``coords``
    (z, y, x in mm): a sum of separable cosines cos(pi k (u + L/2) / L), k < ``order``, with
    weights falling as 1 / (1 + kx + ky + kz) (the DCT basis of Ashburner & Friston 1999)."""
    k = np.arange(order)
    coef = rng.standard_normal((channels, order, order, order))
    coef /= 1.0 + k[:, None, None] + k[None, :, None] + k[None, None, :]
    coef[:, 0, 0, 0] = 0.0
    z, y, x = (np.cos(np.pi * np.outer(c + length / 2, k) / length) for c in coords)
    field = np.einsum("cabd,zd,yb,xa->zyxc", coef, z, y, x, optimize=True)
    return field * (rms / np.sqrt(np.mean(field**2)))


def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-1, 1, 3) * np.array(max_deg))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _coarse_fields(rng: np.random.Generator, template: dict) -> np.ndarray:
    """Per plane, on a coarse 65x65 grid: where each output pixel samples the template (as
    grid_sample coordinates x, y, z in [-1, 1]) and a multiplicative bias field.
    [32, 4, 65, 65] float64."""
    u = np.linspace(-(SIZE - 1) / 2, (SIZE - 1) / 2, COARSE) * PIXEL_MM
    xs, ys, zs = CENTRE_MM[0] - u, CENTRE_MM[1] - u, PLANES_MM  # columns: right -> left
    grid = np.stack(np.meshgrid(zs, ys, xs, indexing="ij")[::-1], -1)  # [Z, y, x, (x, y, z)]
    # 1. affine about the frame centre: rotation, scale +-5 % (+-3 % per axis), shift
    matrix = _rotation(rng, (3.0, 3.0, 6.0)) * rng.uniform(0.95, 1.05) * rng.uniform(0.97, 1.03, 3)
    shift = rng.uniform(-1, 1, 3) * np.array([3.0, 4.0, 2.0])
    points = (grid - CENTRE_MM) @ matrix.T + CENTRE_MM + shift
    # 2. elastic: low-frequency cosine displacement of 1.5-3 mm RMS
    coords = (zs, ys - CENTRE_MM[1], xs)
    points += _cosine_field(rng, 5, 3, coords, rng.uniform(1.5, 3.0))
    # 3. ventricle enlargement (atrophy): sample closer to the ventricles' centre
    rel = points - VENTRICLES_MM
    falloff = np.exp(-0.5 * ((rel / np.array([18.0, 30.0, 16.0])) ** 2).sum(-1, keepdims=True))
    points = VENTRICLES_MM + rel * (1 - rng.uniform(0.0, 0.35) * falloff)
    # 4. bias field: exp of a smooth field, 3-8 % RMS
    bias = np.exp(_cosine_field(rng, 3, 1, coords, rng.uniform(0.03, 0.08)))
    sizes = np.array(template["volume"].shape[1:][::-1])  # X, Y, Z voxels
    points = (points - template["origin"]) / template["step"] * (2 / (sizes - 1)) - 1
    return np.concatenate([points, bias], -1).transpose(0, 3, 1, 2)


def _piecewise_linear(x: torch.Tensor, xp: list[float], fp: list[float]) -> torch.Tensor:
    """np.interp(x, xp, fp) for increasing ``xp`` and x within [xp[0], xp[-1]]."""
    xp_t, fp_t = torch.tensor(xp, dtype=x.dtype), torch.tensor(fp, dtype=x.dtype)
    slope = (fp_t[1:] - fp_t[:-1]) / (xp_t[1:] - xp_t[:-1])
    segment = torch.bucketize(x, xp_t[1:-1])
    return (x - xp_t[segment]) * slope[segment] + fp_t[segment]


def _brain_box(template: dict, coarse: torch.Tensor) -> tuple[slice, slice]:
    """Rows and columns (output pixels) holding brain on any plane, found by sampling the T1 at
    the coarse grid points, with a margin of two coarse cells."""
    points = coarse[:, :3].permute(0, 2, 3, 1)
    t1 = F.grid_sample(template["volume"][None, :1], points[None], align_corners=True)[0, 0]
    brain = (t1 > BRAIN_T1).numpy()
    cell = (SIZE - 1) / (COARSE - 1)
    box = []
    for hits in (brain.any((0, 2)), brain.any((0, 1))):
        index = np.flatnonzero(hits)
        lo, hi = (index.min() - 2, index.max() + 2) if len(index) else (0, COARSE - 1)
        box.append(slice(max(0, int(lo * cell)), min(SIZE, int(np.ceil(hi * cell)) + 1)))
    return box[0], box[1]


def synthesize_case(template: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic subject: images and masks, uint8 [32, 256, 256] each (masks 0/85/170/255)."""
    coarse = torch.from_numpy(_coarse_fields(rng, template)).float()
    rows, cols = _brain_box(template, coarse)  # only the brain's box is computed below
    # the fields are smooth: upsample them bilinearly (exact for the affine part)
    fields = F.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
    fields = fields[:, :, rows, cols]
    points, bias = fields[:, :3].permute(0, 2, 3, 1), fields[:, 3]
    t1, gm, wm = F.grid_sample(template["volume"][None], points[None], mode="bilinear",
                               padding_mode="zeros", align_corners=True)[0]
    brain = t1 > BRAIN_T1
    # masks: the most probable of CSF = 1 - GM - WM, GM, WM; cortical atrophy thins GM and WM
    keep = 1 - rng.uniform(0.0, 0.2)
    gm, wm = gm.mul_(keep), wm.mul_(keep)
    csf = 1 - gm - wm
    classes = torch.where(gm > csf, 2, 1).masked_fill_((wm > gm) & (wm > csf), 3)
    masks = torch.zeros((SLICES_PER_CASE, SIZE, SIZE), dtype=torch.uint8)
    masks[:, rows, cols] = classes.masked_fill_(~brain, 0).mul_(85).to(torch.uint8)
    # intensity: w * (template T1 -> OASIS-like levels) + (1 - w) * tissue model
    levels = [rng.uniform(25, 50), rng.uniform(105, 135), rng.uniform(195, 230)]
    levels = [255 * (v / 255) ** rng.uniform(0.9, 1.1) for v in levels]  # gamma jitter
    csf_t1, gm_t1, wm_t1 = template["levels"]
    top = min(255.0, levels[2] + 0.6 * (255 - wm_t1))
    w = TEMPLATE_WEIGHT
    intensity = _piecewise_linear(t1, [0.0, csf_t1, gm_t1, wm_t1, 255.0],
                                  [0.0, *(w * v for v in levels), w * top])
    intensity += gm.mul_((1 - w) * (levels[1] - levels[0]))
    intensity += wm.mul_((1 - w) * (levels[2] - levels[0]))
    intensity += (1 - w) * levels[0]
    noise = torch.randn(intensity.shape, generator=torch.Generator().manual_seed(
        int(rng.integers(2**62))))
    intensity = intensity.mul_(bias).add_(noise.mul_(rng.uniform(1.0, 3.0)))
    images = torch.zeros((SLICES_PER_CASE, SIZE, SIZE), dtype=torch.uint8)
    images[:, rows, cols] = intensity.round_().clamp_(1, 255).masked_fill_(~brain, 0).byte()
    return images.numpy(), masks.numpy()


def _write_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def _write_case(out: Path, split: str, case: int, images: np.ndarray, masks: np.ndarray) -> None:
    for n in range(SLICES_PER_CASE):
        _write_png(images[n], image_dir(out, split) / image_name(case, n))
        _write_png(masks[n], mask_dir(out, split) / mask_name(case, n))


def _case_ids(cases: tuple[int, int, int]) -> dict[str, list[int]]:
    if len(cases) != 3 or any(int(n) < 0 for n in cases):
        raise ValueError(f"cases must be three counts (train, validate, test), got {cases!r}")
    for split, n in zip(SPLITS, cases, strict=True):
        if n > MAX_CASES[split]:
            raise ValueError(f"at most {MAX_CASES[split]} {split} cases, got {n}")
    counts = dict(zip(SPLITS, cases, strict=True))
    return {s: list(range(FIRST_CASE[s], FIRST_CASE[s] + int(counts[s]))) for s in SPLITS}


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def build_demo_dataset(out, *, cases: tuple[int, int, int] = (60, 8, 4), seed: int = 0,
                       overwrite: bool = False, progress: bool = True) -> Path:
    """Write the demo dataset under ``out`` in the OASIS layout and return ``out``.

    An existing complete build with the same seed, cases and version is kept. A different or
    unfinished demo build is replaced only with ``overwrite=True``; a non-empty folder without a
    demo manifest is never touched.
    """
    out = Path(out)
    ids = _case_ids(tuple(cases))
    wanted = {"format": "oasis_lib demo dataset", "version": DEMO_VERSION, "seed": int(seed),
              "cases": [len(ids[s]) for s in SPLITS]}
    manifest = _read_manifest(out)
    if manifest is not None:
        if manifest.get("complete") and {k: manifest.get(k) for k in wanted} == wanted:
            return out
        if not overwrite:
            raise FileExistsError(f"{out} holds a different or unfinished demo build "
                                  f"({manifest}); pass overwrite=True (--overwrite) to rebuild it")
        for split in SPLITS:
            shutil.rmtree(image_dir(out, split), ignore_errors=True)
            shutil.rmtree(mask_dir(out, split), ignore_errors=True)
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty and is not a demo dataset (no {MANIFEST}); "
                              "refusing to write into it")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({**wanted, "complete": False}, indent=2) + "\n")
    template = load_template()
    todo = [(s, c) for s in SPLITS for c in ids[s]]
    if progress:
        from tqdm.auto import tqdm

        todo = tqdm(todo, desc="demo cases", unit="case")
    for split in SPLITS:
        if ids[split]:
            image_dir(out, split).mkdir(exist_ok=True)
            mask_dir(out, split).mkdir(exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # faster on shared cores, and thread-count independent results
    try:
        _synthesize_all(out, todo, template, int(seed))
    finally:
        torch.set_num_threads(threads)
    (out / MANIFEST).write_text(json.dumps({**wanted, "complete": True}, indent=2) + "\n")
    return out


def _synthesize_all(out: Path, todo, template: dict, seed: int) -> None:
    with ThreadPoolExecutor(1) as writer:  # PNG encoding overlaps the next case's synthesis
        job = None
        for split, case in todo:
            images, masks = synthesize_case(template, np.random.default_rng([seed, case]))
            if job is not None:
                job.result()
            job = writer.submit(_write_case, out, split, case, images, masks)
        if job is not None:
            job.result()


def ensure_demo_dataset(path=None) -> Path:
    """Return the demo dataset at ``path`` (default ``data/demo`` at the repo root), building
    it with the default settings first if it is missing or unfinished."""
    path = Path(path) if path is not None else default_demo_root()
    manifest = _read_manifest(path)
    if manifest is not None and manifest.get("complete"):
        return path
    print(f"Building the offline demo dataset (MNI152 template, synthetic cases) in {path} ...")
    return build_demo_dataset(path, overwrite=manifest is not None)


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Register ``make-demo`` on an argparse subparsers object (calls :func:`make_demo_cli`)."""
    parser = subparsers.add_parser("make-demo", help="build the offline demo dataset")
    parser.add_argument("--out", default=str(default_demo_root()), help="output folder")
    parser.add_argument("--cases", type=int, nargs=3, default=[60, 8, 4],
                        metavar=("TRAIN", "VALIDATE", "TEST"), help="cases per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace another demo build")
    parser.set_defaults(func=make_demo_cli)
    return parser


def make_demo_cli(args: argparse.Namespace) -> Path:
    out = build_demo_dataset(args.out, cases=tuple(args.cases), seed=args.seed,
                             overwrite=args.overwrite)
    print(f"demo dataset ready in {out}")
    return out


def main(argv=None) -> Path:
    """``python -m oasis_lib.demo_data [--out DIR] [--cases 60 8 4] [--seed 0]``."""
    parser = argparse.ArgumentParser(prog="python -m oasis_lib.demo_data")
    sub = parser.add_subparsers(dest="command")
    add_cli(sub)
    return make_demo_cli(parser.parse_args(["make-demo", *(argv or [])]))


if __name__ == "__main__":
    main()
