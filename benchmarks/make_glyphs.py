"""Writes ``glyphs``: a synthetic RGB image set whose classes are glyphs of a few strokes.

Each class is a random glyph of ``--strokes`` line segments. Every image draws its class's
glyph with the segments' ends moved a little, turned, scaled, shifted and stroked at a
random width, in a random colour over a random background with pixel noise; half the images
have one more stroke at random (clutter). The images are drawn at four times their size
and averaged down, so every stroke is resolved at the size written (unlike the textures of
``make_shapes64.py`` at 16 pixels, finer than a pixel there).

With 40 classes, telling the glyphs apart takes capacity: a subnet's accuracy grows with
its size more than it varies between runs, unlike on the digits or the shapes, so a benchmark
that ranks subnets (``supernet_ranking.py``) has an order to find.

    python benchmarks/make_glyphs.py data/glyphs.npz [--n 20000] [--classes 40] [--size 16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from evaluators import atomic_write

SUPERSAMPLE = 4
CHUNK = 1000


def _segment_mask(ends: np.ndarray, width: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Returns (m, g, g) 1.0 where a pixel centre of ``grid`` (2, g, g) is within ``width``
    (m, 1, 1) of the segment ``ends`` (m, 2 ends, xy), else 0.0."""
    a, b = ends[:, 0][:, :, None, None], ends[:, 1][:, :, None, None]
    ab, ap = b - a, grid[None] - a
    t = np.clip((ap * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-6), 0, 1)
    distance = np.sqrt(((ap - t[:, None] * ab) ** 2).sum(1))
    return (distance < width).astype(np.float32)


def make(n: int, classes: int = 40, size: int = 16, seed: int = 0, strokes: int = 3,
         jitter: float = 0.10) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``x`` (n, 3, size, size) uint8 and ``y`` (n,) int64, classes balanced and
    shuffled. The glyphs come from ``seed`` too: the same seed, the same classes."""
    rng = np.random.default_rng(seed)
    glyphs = np.random.default_rng(1000 + seed).uniform(
        -0.8, 0.8, (classes, strokes, 2, 2)).astype(np.float32)
    y = np.arange(n) % classes
    rng.shuffle(y)
    fine = size * SUPERSAMPLE
    centres = (np.arange(fine, dtype=np.float32) + 0.5) / fine * 2 - 1  # the image is [-1, 1]^2
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    grid = np.stack([xx, yy])
    x = np.empty((n, 3, size, size), np.uint8)
    for start in range(0, n, CHUNK):
        labels = y[start:start + CHUNK]
        m = len(labels)
        ends = glyphs[labels] + rng.normal(0, jitter, (m, strokes, 2, 2)).astype(np.float32)
        angle = rng.uniform(-0.3, 0.3, m)
        scale = rng.uniform(0.75, 1.05, (m, 2))
        shift = rng.uniform(-0.15, 0.15, (m, 2))
        turn = np.stack([np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)], 1)
        affine = turn.reshape(m, 2, 2) * scale[:, :, None]
        ends = np.einsum("mij,mskj->mski", affine, ends) + shift[:, None, None, :]
        width = rng.uniform(0.09, 0.15, (m, 1, 1)).astype(np.float32)
        segments = [ends[:, k] for k in range(strokes)]
        clutter = rng.uniform(-1, 1, (m, 2, 2)).astype(np.float32)
        clutter[rng.random(m) >= 0.5] = 10.0  # off the image: no clutter stroke
        segments.append(clutter)
        mask = np.zeros((m, fine, fine), np.float32)
        for segment in segments:
            mask = np.maximum(mask, _segment_mask(segment, width, grid))
        mask = mask.reshape(m, size, SUPERSAMPLE, size, SUPERSAMPLE).mean((2, 4))[:, None]
        background = rng.uniform(0.2, 0.8, (m, 3, 1, 1))
        contrast = rng.uniform(0.3, 0.6, (m, 1, 1, 1)) * rng.choice([-1.0, 1.0], (m, 1, 1, 1))
        tint = rng.uniform(0.4, 1.0, (m, 3, 1, 1))
        noise = rng.uniform(0.03, 0.10, (m, 1, 1, 1)) * rng.standard_normal((m, 3, size, size))
        image = background + mask * contrast * tint + noise
        x[start:start + m] = np.clip(image * 255, 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


def write(path: Path, n: int, classes: int = 40, size: int = 16, seed: int = 0) -> tuple[int, ...]:
    """Writes ``n`` images made with ``seed`` (and the class names) to the npz ``path``
    atomically, its folder created if need be, and returns the images' array shape."""
    x, y = make(n, classes, size, seed)
    names = np.array([f"glyph{i}" for i in range(classes)])
    atomic_write(path, lambda f: np.savez_compressed(f, x=x, y=y, classes=names))
    return x.shape


def written(path: Path, n: int, classes: int = 40, size: int = 16, seed: int = 0) -> Path:
    """Returns ``path``, first writing ``n`` images made with ``seed`` there if it does not
    exist (a cache: an existing file is taken as it is)."""
    if not path.exists():
        write(path, n, classes, size, seed)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the .npz file to write")
    parser.add_argument("--n", type=int, default=20000, help="images in all (default 20000)")
    parser.add_argument("--classes", type=int, default=40, help="glyphs to tell apart (default 40)")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.classes < 2 or args.n < args.classes:
        parser.error("--classes: at least 2, and --n at least as many images as classes")
    shape = write(args.out, args.n, args.classes, args.size, args.seed)
    print(f"wrote {args.out}: x {shape} uint8, {args.classes} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
