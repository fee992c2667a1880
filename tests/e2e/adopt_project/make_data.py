"""The team's data: small 8x8 grayscale PNGs in one folder per class (data.source image_folder).

Deterministic (a fixed seed), so the same commit always holds the same images:
    python make_data.py data/shapes [per_class]
Three classes a small model separates: a bright horizontal bar, a bright vertical bar, a
bright diagonal, each on noise.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("horizontal", "vertical", "diagonal")


def image(kind: str, rng: np.random.Generator) -> np.ndarray:
    img = rng.integers(0, 60, size=(8, 8))
    k = int(rng.integers(1, 7))
    if kind == "horizontal":
        img[k, :] = 255
    elif kind == "vertical":
        img[:, k] = 255
    else:
        idx = np.arange(8)
        img[idx, idx if k % 2 else 7 - idx] = 255
    return img.astype(np.uint8)


def main(root: Path, per_class: int = 100) -> None:
    rng = np.random.default_rng(15)
    for kind in CLASSES:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(image(kind, rng), mode="L").save(folder / f"{kind}-{i:03d}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100)
