"""Writes ``shapes64``: a synthetic RGB 64x64 image classification set for the ``cpu-64`` config.

Ten classes of drawn shapes and textures (disc, square, triangle, cross, ring, diamond,
horizontal, vertical and diagonal bars, checkerboard) at random sizes, positions, colours
and contrasts, over noisy, shaded backgrounds with a distractor patch. It is small enough to
generate in seconds and hard enough that small subnets and compressed models differ in
accuracy (unlike the digits, where every subnet reaches 0.98-1.0).

    python benchmarks/make_shapes64.py data/shapes64.npz [--n 6000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from evaluators import atomic_write

CLASSES = ("disc", "square", "triangle", "cross", "ring", "diamond",
           "hbars", "vbars", "dbars", "checker")
SIZE = 64


def _masks(kind: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Returns ``n`` boolean (64, 64) masks of shape ``kind`` at random places and sizes."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cy = rng.uniform(18, SIZE - 18, (n, 1, 1)).astype(np.float32)
    cx = rng.uniform(18, SIZE - 18, (n, 1, 1)).astype(np.float32)
    r = rng.uniform(9, 18, (n, 1, 1)).astype(np.float32)
    name = CLASSES[kind]
    # a square turned by 45 degrees is a diamond: those two turn by 20 degrees at most
    spread = np.pi / 9 if name in ("square", "diamond") else np.pi
    angle = rng.uniform(-spread, spread, (n, 1, 1)).astype(np.float32)
    dy, dx = yy[None] - cy, xx[None] - cx
    # rotate the local frame, so no class is told apart by its orientation alone
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    inside = (np.abs(u) < r) & (np.abs(v) < r)
    period = rng.uniform(4, 8, (n, 1, 1)).astype(np.float32)
    if name == "disc":
        return u**2 + v**2 < r**2
    if name == "square":
        return inside
    if name == "triangle":
        return (v > -r) & (v < r) & (np.abs(u) < (r - v) / 2)
    if name == "cross":
        w = r / 3
        return ((np.abs(u) < w) & (np.abs(v) < r)) | ((np.abs(v) < w) & (np.abs(u) < r))
    if name == "ring":
        d = np.sqrt(u**2 + v**2)
        return (d < r) & (d > 0.55 * r)
    if name == "diamond":
        return np.abs(u) + np.abs(v) < r
    if name == "hbars":  # bars across the (unrotated) image, inside a square window
        return inside & (np.mod(dy, period) < period / 2)
    if name == "vbars":
        return inside & (np.mod(dx, period) < period / 2)
    if name == "dbars":
        return inside & (np.mod(dx + dy, period) < period / 2)
    return inside & ((np.mod(dx, period) < period / 2) ^ (np.mod(dy, period) < period / 2))


def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``x`` (n, 3, 64, 64) uint8 and ``y`` (n,) int64, classes balanced and shuffled."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    x = np.empty((n, 3, SIZE, SIZE), np.uint8)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    for kind in range(len(CLASSES)):
        idx = np.flatnonzero(y == kind)
        m = len(idx)
        mask = _masks(kind, m, rng)[:, None]  # (m, 1, H, W)
        background = rng.uniform(0.2, 0.8, (m, 3, 1, 1))
        # a linear shading across the image and per-pixel noise
        shade = (rng.uniform(-0.25, 0.25, (m, 1, 1, 1)) * (yy - 0.5)
                 + rng.uniform(-0.25, 0.25, (m, 1, 1, 1)) * (xx - 0.5))
        contrast = rng.uniform(0.25, 0.6, (m, 1, 1, 1)) * rng.choice([-1.0, 1.0], (m, 1, 1, 1))
        tint = rng.uniform(0.4, 1.0, (m, 3, 1, 1))
        image = background + shade + mask * contrast * tint
        # a distractor: a plain rectangle of another colour somewhere
        top = rng.integers(0, SIZE - 12, m)
        left = rng.integers(0, SIZE - 12, m)
        colour = rng.uniform(0.0, 1.0, (m, 3))
        for j in range(m):
            h, w = rng.integers(4, 9, 2)
            image[j, :, top[j]:top[j] + h, left[j]:left[j] + w] = colour[j][:, None, None]
        image += rng.uniform(0.02, 0.08, (m, 1, 1, 1)) * rng.standard_normal(image.shape)
        x[idx] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


def write(path: Path, n: int, seed: int = 0) -> tuple[int, ...]:
    """Writes ``n`` images made with ``seed`` (and the class names) to the npz ``path``
    atomically, its folder created if need be, and returns the images' array shape."""
    x, y = make(n, seed)
    atomic_write(path, lambda f: np.savez_compressed(f, x=x, y=y, classes=np.array(CLASSES)))
    return x.shape


def written(path: Path, n: int, seed: int = 0) -> Path:
    """Returns ``path``, first writing ``n`` images made with ``seed`` there if it does
    not exist (a cache: an existing file is taken as it is)."""
    if not path.exists():
        write(path, n, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .npz file to write")
    parser.add_argument("--n", type=int, default=6000, help="images in all (default 6000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = write(args.out, args.n, args.seed)
    print(f"wrote {args.out}: x {shape} uint8, {len(CLASSES)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
