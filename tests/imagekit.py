"""Tiny image data for tests: random RGB images written as files, and paired folders."""
import cv2
import numpy as np


def write_rgb(path, rgb_u8):
    """Write an RGB uint8 image (OpenCV stores BGR), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb_u8[..., ::-1]))
    return path


def rand_u8(rng, h, w, lo=0, hi=256):
    return rng.integers(lo, hi, (h, w, 3), dtype=np.uint8)


def make_pairs(root):
    """``root/low`` and ``root/high`` with low = high // 2 exactly (even high values), so
    input * 2 == target after any crop, flip or rotation."""
    rng = np.random.default_rng(1)
    for i, (h, w) in enumerate([(36, 52), (44, 30)]):
        high = rand_u8(rng, h, w, 0, 128) * 2
        write_rgb(root / "high" / f"p{i}.png", high)
        write_rgb(root / "low" / f"p{i}.png", high // 2)
    return root / "low", root / "high"
