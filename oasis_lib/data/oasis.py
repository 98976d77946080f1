"""OASIS brain MRI slices as PyTorch datasets.

The folder layout, file names and class ids are in :mod:`oasis_lib.data.layout`. Every dataset
item is an image ``float32 [1, H, W]`` in [-1, 1] and, with masks, a ``long [H, W]`` mask with
classes 0..3 (docs/INTERFACES.md).

Transforms (torchvision.transforms.v2) are called as ``transform(image, mask)`` (or
``transform(image)`` without masks) on a **uint8** ``tv_tensors.Image [1, H, W]`` (0..255) and a
uint8 ``tv_tensors.Mask [H, W]`` of classes 0..3, so spatial transforms move both together and
masks are resized with nearest neighbour. The transform must keep the image uint8: the dataset
maps it to [-1, 1] afterwards, exactly once (``x / 127.5 - 1``: 0 -> -1, 255 -> 1).

PNG files whose name does not follow the naming pattern raise ``DataError`` (a stray PNG in a
split folder usually means a wrong folder); hidden files and non-PNG files (``Thumbs.db``,
``.DS_Store``, ``._*``) are ignored. Non-grey PNGs (RGB, RGBA, palette, 16-bit) are converted
to 8-bit grey (ITU-R 601 luma for colour, alpha dropped; 16-bit rounded to ``v * 255 / 65535``)
with one warning per dataset.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .checks import common_size, read_png
from .layout import (
    DEFAULT_TRAIN_SPLITS,
    IMAGE_PATTERN,
    MASK_PATTERN,
    MASK_VALUES,
    SPLITS,
    DataError,
    check_train_splits,
    image_dir,
    image_name,
    mask_dir,
    mask_name,
)
from .roots import check_split_folders, resolve_data_root

_MASK_LUT = np.full(256, 255, dtype=np.uint8)  # PNG value -> class (255 = invalid)
_MASK_LUT[list(MASK_VALUES)] = np.arange(4, dtype=np.uint8)
_DECODE_THREADS = min(4, os.cpu_count() or 1)

Item = tuple[int, int, Path, "Path | None"]


def _names(paths: Sequence, limit: int = 5) -> str:
    shown = ", ".join(Path(p).name for p in list(paths)[:limit])
    return shown + (f" ... ({len(paths)} in all)" if len(paths) > limit else "")


def _scan(folder: Path, kind: str) -> dict[tuple[int, int], Path]:
    """Map (case, slice) -> file for the ``kind`` ("image" or "mask") PNGs of one folder."""
    pattern, example = (
        (IMAGE_PATTERN, image_name(1, 0)) if kind == "image" else (MASK_PATTERN, mask_name(1, 0))
    )
    if not folder.is_dir():
        hint = ""
        if (folder.parent / "keras_png_slices_data").is_dir():
            hint = f"; did you mean root={folder.parent / 'keras_png_slices_data'}?"
        elif folder.parent.name.startswith("keras_png_slices_"):
            hint = (f"; {folder.parent} is itself a split folder: the data root is the folder "
                    f"that holds it, {folder.parent.parent}")
        raise DataError(f"{kind} folder {folder} does not exist{hint}")
    found: dict[tuple[int, int], Path] = {}
    unmatched = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() != ".png" or not path.is_file():
            continue  # Thumbs.db, .DS_Store, ._* resource forks, sub-folders
        match = pattern.match(path.name)
        if match is None:
            unmatched.append(path)
            continue
        key = (int(match[1]), int(match[2]))
        if key in found:
            raise DataError(f"{folder}: {found[key].name} and {path.name} are both case "
                            f"{key[0]} slice {key[1]}")
        found[key] = path
    if unmatched:
        hint = ""
        other = MASK_PATTERN if kind == "image" else IMAGE_PATTERN
        if all(other.match(p.name) for p in unmatched):
            hint = " (these look like the other kind of file: are image and mask folders swapped?)"
        raise DataError(f"{folder}: {len(unmatched)} PNG file(s) do not match the {kind} name "
                        f"pattern {pattern.pattern!r} (e.g. {example}): {_names(unmatched)}{hint}")
    if not found:
        raise DataError(f"{kind} folder {folder} holds no PNG files named like {example}")
    return found


def _read_png(path: Path) -> tuple[np.ndarray, str]:
    """Decode one PNG to uint8 [H, W] and its original PIL mode: every variant is read
    correctly or refused by name (:func:`oasis_lib.data.checks.read_png`)."""
    return read_png(path)


def _mask_classes(values: np.ndarray, path: Path) -> np.ndarray:
    classes = _MASK_LUT[values]
    if (classes == 255).any():
        bad = np.unique(values[classes == 255])
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if bad.size > 8 else "")
        raise DataError(f"{path}: mask pixel values {shown} are not among 0/85/170/255 "
                        "(background/CSF/grey/white matter)")
    return classes


def _size_pair(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _resize(stack: torch.Tensor, size: tuple[int, int] | None, *, mask: bool) -> torch.Tensor:
    """Resize uint8 [N, H, W]: antialiased bilinear for images, nearest for masks."""
    if size is None or tuple(stack.shape[-2:]) == size:
        return stack
    if mask:
        return TF.resize(tv_tensors.Mask(stack), list(size)).as_subclass(torch.Tensor)
    return TF.resize(stack[:, None], list(size), antialias=True)[:, 0]


def _to_model_range(image: torch.Tensor) -> torch.Tensor:
    if image.dtype != torch.uint8:
        raise TypeError(f"the transform returned a {image.dtype} image; keep it uint8 (0..255): "
                        "OASISDataset itself maps images to [-1, 1] after the transform")
    return image.as_subclass(torch.Tensor).float() / 127.5 - 1.0


class OASISDataset(Dataset):
    """OASIS slices of one split folder, optionally paired with their segmentation masks.

    Args:
        root: folder of images ``case_XXX_slice_N.nii.png``.
        label_path: folder of masks ``seg_XXX_slice_N.nii.png`` or None (images only). Masks are
            paired by (case, slice) parsed from the names, never by sorted position.
        transform: torchvision v2 transform called as ``transform(image, mask)`` (or
            ``transform(image)``) on uint8 tv_tensors; see the module docstring.
        cache: decode every PNG once at construction and keep uint8 stacks in memory
            (``self.images [N, H, W]``, ``self.masks [N, H, W]`` of classes). False decodes
            per item.
        image_size: int or (H, W): resize once while decoding (antialiased bilinear for images,
            nearest for masks), so a resize-only pipeline costs nothing per epoch.

    Items are sorted by (case, slice) numerically. ``self.items`` lists
    ``(case, slice, image_path, mask_path_or_None)``; ``self.case_ids`` the sorted unique cases.
    """

    def __init__(self, root, label_path=None, transform: Callable | None = None, *,
                 cache: bool = True, image_size: int | Sequence[int] | None = None) -> None:
        self.root = Path(root)
        self.label_path = None if label_path is None else Path(label_path)
        self.transform = transform
        self.cache = cache
        self.size = _size_pair(image_size)
        images = _scan(self.root, "image")
        masks = _scan(self.label_path, "mask") if self.label_path is not None else None
        if masks is not None:
            no_mask = sorted(set(images) - set(masks))
            if no_mask:
                raise DataError(f"{len(no_mask)} image(s) in {self.root} have no mask in "
                                f"{self.label_path}: {_names([images[k] for k in no_mask])} "
                                f"(expected e.g. {mask_name(*no_mask[0])})")
            no_image = sorted(set(masks) - set(images))
            if no_image:
                raise DataError(f"{len(no_image)} mask(s) in {self.label_path} have no image in "
                                f"{self.root}: {_names([masks[k] for k in no_image])} "
                                f"(expected e.g. {image_name(*no_image[0])})")
        self.items: list[Item] = [
            (case, slice_, images[case, slice_], None if masks is None else masks[case, slice_])
            for case, slice_ in sorted(images)
        ]
        self.case_ids: list[int] = sorted({case for case, *_ in self.items})
        self._converted: list[tuple[Path, str]] = []
        self._warned = False
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        # The size most images have (from the PNG headers): a size error names the odd file.
        self.native_size = common_size([item[2] for item in self.items], self.root,
                                       threads=_DECODE_THREADS)
        if cache:
            self.images, self.masks = self._decode_all()
        self._warn_converted()

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Read, check and convert one (image, mask) pair to uint8 [H, W] arrays."""
        _, _, image_path, mask_path = self.items[index]
        image, mode = _read_png(image_path)
        if mode != "L":
            self._converted.append((image_path, mode))
        if image.shape != self.native_size:
            first = self.items[0][2]
            raise DataError(f"images in {self.root} differ in size: {first.name} is "
                            f"{self.native_size[0]}x{self.native_size[1]} but {image_path.name} "
                            f"is {image.shape[0]}x{image.shape[1]}")
        if mask_path is None:
            return image, None
        values, mode = _read_png(mask_path)
        if mode != "L":
            self._converted.append((mask_path, mode))
        if values.shape != image.shape:
            raise DataError(f"mask {mask_path} is {values.shape[0]}x{values.shape[1]} but its "
                            f"image {image_path.name} is {image.shape[0]}x{image.shape[1]}")
        return image, _mask_classes(values, mask_path)

    def _decode_all(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        size = self.size or tuple(self.native_size)
        n, chunk = len(self.items), 256
        images = torch.empty((n, *size), dtype=torch.uint8)
        has_masks = self.label_path is not None
        masks = torch.empty((n, *size), dtype=torch.uint8) if has_masks else None
        with ThreadPoolExecutor(_DECODE_THREADS) as pool:  # PIL decodes without the GIL
            for start in range(0, n, chunk):
                pairs = list(pool.map(self._decode, range(start, min(start + chunk, n))))
                stop = start + len(pairs)
                block = torch.from_numpy(np.stack([p[0] for p in pairs]))
                images[start:stop] = _resize(block, self.size, mask=False)
                if has_masks:
                    block = torch.from_numpy(np.stack([p[1] for p in pairs]))
                    masks[start:stop] = _resize(block, self.size, mask=True)
        return images, masks

    def _warn_converted(self) -> None:
        if self._converted and not self._warned:
            self._warned = True
            path, mode = min(self._converted)  # decode threads append in any order
            warnings.warn(f"{path} is a mode {mode!r} PNG, not 8-bit grey; converted it (and "
                          f"{len(self._converted) - 1} more file(s) so far in this dataset) to "
                          "8-bit grey", UserWarning, stacklevel=3)

    def raw(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Untransformed uint8 image [1, H, W] and mask classes [H, W] (or None)."""
        if self.images is not None:
            image = self.images[index]
            mask = None if self.masks is None else self.masks[index]
        else:
            image_np, mask_np = self._decode(index)
            self._warn_converted()
            image = _resize(torch.from_numpy(image_np)[None], self.size, mask=False)[0]
            mask = None if mask_np is None else _resize(
                torch.from_numpy(mask_np)[None], self.size, mask=True)[0]
        return image[None], mask

    def __getitem__(self, index: int):
        image, mask = self.raw(index)
        image = tv_tensors.Image(image)
        if mask is None:
            if self.transform is not None:
                image = self.transform(image)
            return _to_model_range(image)
        mask = tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return _to_model_range(image), mask.as_subclass(torch.Tensor).long()

    def __repr__(self) -> str:
        masks = "with masks" if self.label_path is not None else "images only"
        size = self.size or tuple(self.native_size)
        return (f"OASISDataset({self.root.name}: {len(self.case_ids)} cases, {len(self)} slices, "
                f"{size[0]}x{size[1]}, {masks})")


def default_transform(image_size: int | Sequence[int] | None = None, *,
                      augment: bool = False) -> v2.Transform:
    """Joint (image, mask) transform: Resize (antialiased image, nearest mask) and, with
    ``augment``, a shared RandomHorizontalFlip. Works on the uint8 tv_tensors OASISDataset
    passes in; it does not scale (the dataset does that once)."""
    steps: list[v2.Transform] = []
    if image_size is not None:
        steps.append(v2.Resize(list(_size_pair(image_size)), antialias=True))
    if augment:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    return v2.Compose(steps) if steps else v2.Identity()



def check_disjoint_splits(root) -> dict[str, list[int]]:
    """Case ids per split (from image names); DataError if a case is in two splits."""
    root = Path(root)
    cases = {s: sorted({c for c, _ in _scan(image_dir(root, s), "image")}) for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = sorted(set(cases[a]) & set(cases[b]))
            if shared:
                raise DataError(f"case(s) {shared[:10]} appear in both the {a} and {b} splits "
                                f"under {root}; splits must not share subjects")
    return cases


def load_split(name: str, root=None, image_size: int | Sequence[int] | None = 64, *,
               with_masks: bool = False, augment: bool | None = None,
               cache: bool = True) -> OASISDataset:
    """One split ("train", "validate" or "test"), cached at ``image_size`` (None = native).
    ``augment`` (horizontal flip) defaults to True for "train" only."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; choose one of {SPLITS}")
    root = resolve_data_root(root)
    augment = (name == "train") if augment is None else augment
    return OASISDataset(image_dir(root, name), mask_dir(root, name) if with_masks else None,
                        default_transform(None, augment=augment), cache=cache,
                        image_size=image_size)


def load_splits(root=None, image_size: int | Sequence[int] | None = 64, *,
                with_masks: bool = False, augment: bool = True, cache: bool = True,
                train_splits: Sequence[str] = DEFAULT_TRAIN_SPLITS,
                ) -> tuple[ConcatDataset, OASISDataset]:
    """(train, validate): train = ConcatDataset of the ``train_splits``, flipped at random when
    ``augment``; validate is never augmented. Checks that no case is shared.

    ``train_splits``: ``("train",)`` (the default) keeps the test split untouched, so it can
    report final numbers (validate chooses best.pt); ``("train", "test")`` is the seed's
    choice (:data:`~oasis_lib.data.layout.SEED_TRAIN_SPLITS`), which leaves no split held out.
    """
    train_splits = check_train_splits(train_splits)
    root, given = resolve_data_root(root), root
    check_split_folders(root, given, trained=train_splits, masks=with_masks)
    check_disjoint_splits(root)
    parts = [load_split(s, root, image_size, with_masks=with_masks, augment=augment, cache=cache)
             for s in train_splits]
    validate = load_split("validate", root, image_size, with_masks=with_masks, augment=False,
                          cache=cache)
    return ConcatDataset(parts), validate
