"""Official-parity cases: constructor kwargs, the deterministic weight recipe and the input.

``data/official_outputs.npz`` holds the outputs the official swz30/MIRNetv2 ``MIRNet_v2`` class
produced for these cases (generated once, outside this repository, from the official code with
``official_weights``); the parity test rebuilds them with our network.
"""
import numpy as np

CASES = {
    "default": {},
    "n16_bias": {"n_feat": 16, "bias": True},
    "n32_mrb1_ignored": {"n_feat": 32, "n_MRB": 1, "n_RRG": 2, "height": 2, "width": 4, "scale": 4},
    "defocus": {"inp_channels": 6, "n_feat": 16, "task": "defocus_deblurring"},
}
INPUT_HW = (16, 24)


def official_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Key i of the sorted keys: standard normal from rng([seed, i]), scaled 1/sqrt(fan_in) for
    weights and 0.1 for biases (1-D tensors)."""
    out = {}
    for i, key in enumerate(sorted(shapes)):
        shape = shapes[key]
        w = np.random.default_rng([seed, i]).standard_normal(shape).astype(np.float32)
        scale = 0.1 if len(shape) == 1 else 1.0 / np.sqrt(np.prod(shape[1:]))
        out[key] = (w * np.float32(scale)).astype(np.float32)
    return out


def case_input(channels: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((1, channels, *INPUT_HW), dtype=np.float32)
