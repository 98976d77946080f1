"""Slices per second of the training loader: one epoch, DataLoader(batch 16, shuffle).

``cold`` = building the datasets (decoding every PNG into the uint8 cache) plus the first epoch;
``warm`` = the next epoch, served from the cache. Training needs a few hundred slices/s at most
(~20 optimiser steps/s x batch 20 on a GPU), so the loader must never be the bottleneck.

    python benchmarks/bench_loader.py [--root DIR] [--sizes 64 128] [--workers 0] [--masks]
"""

from __future__ import annotations

import argparse
import time

from torch.utils.data import DataLoader

from oasis_lib.data import load_splits, resolve_data_root


def epoch(dataset, *, batch_size: int, workers: int) -> int:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    return sum(len(batch[0] if isinstance(batch, list) else batch) for batch in loader)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="data root (default: $OASIS_DATA or demo)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--masks", action="store_true", help="also load the tissue masks")
    args = parser.parse_args(argv)
    root = resolve_data_root(args.root)
    print(f"data root: {root}; batch {args.batch_size}, shuffle, {args.workers} workers, "
          f"{'images + masks' if args.masks else 'images'}")
    for size in args.sizes:
        start = time.perf_counter()
        train, _ = load_splits(root, image_size=size, with_masks=args.masks, augment=True)
        built = time.perf_counter()
        n = epoch(train, batch_size=args.batch_size, workers=args.workers)
        cold_end = time.perf_counter()
        epoch(train, batch_size=args.batch_size, workers=args.workers)
        warm = time.perf_counter() - cold_end
        cold = cold_end - start
        print(f"{size:>4}x{size:<4} {n} slices | cold {n / cold:8.0f} slices/s "
              f"({built - start:.1f} s decode + {cold_end - built:.1f} s epoch) | "
              f"warm {n / warm:8.0f} slices/s")


if __name__ == "__main__":
    main()
