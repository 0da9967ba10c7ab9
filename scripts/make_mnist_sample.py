"""Rebuild the embedded ``mnist-sample`` archive from the official MNIST files.

Run from the repository root, with DATA_DIR a data directory that contains the four
official MNIST IDX files in ``DATA_DIR/mnist/`` (gzipped or not)::

    python scripts/make_mnist_sample.py --data-dir DATA_DIR

The sample is the first 10,000 training images and the first 2,000 test images, in
file order, written to ``robustdc/data/assets/mnist-sample.npz`` with fixed archive
timestamps. The same input files give the same bytes with the same zlib build, so the
printed SHA-256 digest should equal ``SAMPLE_SHA256`` in ``robustdc/data/sample.py``.
When it does not, the script prints a warning, and that constant must be updated.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustdc.data import load_arrays
from robustdc.data.sample import SAMPLE_ASSET, SAMPLE_SHA256, SAMPLE_SIZES, write_sample_archive


@dataclass(frozen=True)
class Config:
    """Defaults of the command-line options."""

    data_dir: Path | None = None  # None: the usual data-directory resolution
    out: Path = SAMPLE_ASSET


def parse_args() -> Config:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Config.data_dir,
        help="data directory containing mnist/ with the official IDX files "
        "(default: $ROBUSTDC_DATA, else ~/.cache/robustdc/data)",
    )
    parser.add_argument(
        "--out", type=Path, default=Config.out, help="archive to write (default: %(default)s)"
    )
    args = parser.parse_args()
    return Config(data_dir=args.data_dir, out=args.out)


def main() -> None:
    config = parse_args()
    arrays: dict[str, np.ndarray] = {}
    for split, size in SAMPLE_SIZES.items():
        images, labels = load_arrays("mnist", split, data_dir=config.data_dir, download=False)
        arrays[f"{split}_images"] = images[:size, :, :, 0]  # (size, 28, 28)
        arrays[f"{split}_labels"] = labels[:size].astype(np.uint8)

    digest = write_sample_archive(config.out, arrays)

    print(f"{'split':<6} {'images':>7}  class counts 0-9")
    for split in SAMPLE_SIZES:
        labels = arrays[f"{split}_labels"]
        counts = " ".join(str(count) for count in np.bincount(labels, minlength=10))
        print(f"{split:<6} {len(labels):>7}  {counts}")
    print(f"wrote {config.out} ({config.out.stat().st_size:,} bytes)")
    print(f"SHA-256 {digest}")
    if digest != SAMPLE_SHA256:
        print(
            f"the digest differs from SAMPLE_SHA256 ({SAMPLE_SHA256}) in "
            "robustdc/data/sample.py: update that constant, or the sample will not load"
        )


if __name__ == "__main__":
    main()
