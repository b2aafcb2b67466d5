"""Training losses: Charbonnier, L1, MSE, SSIM, VGG-19 perceptual, and their weighted sum.

Everything takes ``NxCxHxW`` float tensors with values in ``[0, 1]`` (RGB for the perceptual loss).

* :class:`SSIMLoss` is ``1 - SSIM`` with exactly the window and constants of
  :func:`mirnet.sdk.metrics.ssim` (11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, 'valid' region),
  so ``1 - SSIMLoss()(x, y)`` equals ``metrics.ssim`` on the same image up to float32 rounding.
* :class:`VGG19Features` is torchvision's ``vgg19().features`` layer layout written here
  (torchvision is not a dependency). Weights come only from a local file the user names
  (:func:`load_vgg19_state_dict`); nothing is ever downloaded.
* :func:`build_loss` turns a :class:`LossConfig` into a module whose
  ``forward(pred, target)`` returns ``(total, terms)``: the weighted sum (a scalar tensor to
  backpropagate) and a ``{name: float}`` dict of the *unweighted* individual terms, for logging.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import L1Loss, MSELoss

from mirnet.sdk.errors import ArtifactError, ConfigError, InputError, require
from mirnet.sdk.metrics import SSIM_K1, SSIM_K2, SSIM_WIN_SIZE, gaussian_window_1d

__all__ = [
    "CharbonnierLoss", "L1Loss", "MSELoss", "SSIMLoss", "ssim_torch",
    "VGG19Features", "VGG19_LAYER_NAMES", "load_vgg19_state_dict", "PerceptualLoss",
    "DEFAULT_PERCEPTUAL_LAYERS", "LossConfig", "CombinedLoss", "build_loss",
]


def _check_nchw(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise InputError(f"{name} takes two torch tensors, got {type(x).__name__} and "
                         f"{type(y).__name__}; convert images with torch.from_numpy(...).")
    if x.ndim != 4 or x.shape != y.shape:
        raise InputError(
            f"{name} needs two NxCxHxW tensors of the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}; add a batch dimension with .unsqueeze(0) or crop to match.")


class CharbonnierLoss(nn.Module):
    """``mean(sqrt((x - y)^2 + eps^2))``, a differentiable L1 (equals ``eps`` where x == y)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (
                math.isfinite(eps) and eps > 0):
            raise ConfigError(f"CharbonnierLoss eps={eps!r} is invalid; it must be a finite "
                              "number > 0 (the usual value is 1e-3).")
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        diff = pred - target
        return torch.sqrt(diff * diff + self.eps * self.eps).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class DistillationLoss(nn.Module):
    """``criterion`` (default :func:`build_loss`'s, Charbonnier; a config's ``loss:`` terms)
    against the ground truth and against a teacher's output, weighted ``(1 - teacher_weight,
    teacher_weight)``. Its target is the two stacked along the channels, as
    :func:`distillation_target` makes them for :class:`mirnet.train.loop.TrainStep`'s ``target``.
    Returns ``(loss, {"data": ..., "teacher": ...})``."""

    def __init__(self, teacher_weight: float = 0.5, criterion: nn.Module | None = None):
        super().__init__()
        if isinstance(teacher_weight, bool) or not isinstance(teacher_weight, numbers.Real) or not (
                0 <= teacher_weight <= 1):
            raise ConfigError(f"teacher weight {teacher_weight!r}: give a number in [0, 1] (0: ground truth only, "
                              f"1: the teacher only)")
        self.teacher_weight = float(teacher_weight)
        self.criterion = build_loss() if criterion is None else criterion  # the training default

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.criterion(pred, target)
        return loss[0] if isinstance(loss, tuple) else loss

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        c = pred.shape[1]
        if target.ndim != 4 or target.shape[1] != 2 * c:
            raise InputError(f"DistillationLoss target {tuple(target.shape)}: expected ground truth and teacher "
                             f"output stacked along the channels ({2 * c} channels); use distillation_target")
        data = self._loss(pred, target[:, :c])
        teacher = self._loss(pred, target[:, c:])
        loss = (1 - self.teacher_weight) * data + self.teacher_weight * teacher
        return loss, {"data": float(data.detach()), "teacher": float(teacher.detach())}

    def extra_repr(self) -> str:
        return f"teacher_weight={self.teacher_weight}"


def distillation_target(teacher: nn.Module):
    """``(inputs, targets) -> targets and teacher(inputs) stacked along the channels``, the target of
    :class:`DistillationLoss` (TrainStep runs it without gradients)."""
    teacher = teacher.eval()
    return lambda inputs, targets: torch.cat([targets, teacher(inputs).float()], dim=1)


# --------------------------------------------------------------------------------------- SSIM
def _ssim_kernels(channels: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.as_tensor(gaussian_window_1d(), device=device, dtype=dtype)
    kv = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    kh = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    return kv, kh


def ssim_torch(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0
               ) -> torch.Tensor:
    """Differentiable mean SSIM of two ``NxCxHxW`` tensors (same definition as metrics.ssim).

    Averaged over the 'valid' SSIM map, the channels and the batch. Computed in float32 (or
    float64 if the inputs are float64), also under autocast.
    """
    _check_nchw(pred, target, "ssim")
    n, c, h, w = pred.shape
    if min(h, w) < SSIM_WIN_SIZE:
        raise InputError(
            f"SSIM needs images of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels (the Gaussian "
            f"window), got {h}x{w}; train on larger crops or drop the SSIM term.")
    dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=pred.device.type, enabled=False):
        x = pred.to(dtype)
        y = target.to(dtype)
        # One grouped separable convolution over the five maps [x, y, x^2, y^2, xy].
        maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
        kv, kh = _ssim_kernels(5 * c, x.device, dtype)
        blurred = F.conv2d(F.conv2d(maps, kv, groups=5 * c), kh, groups=5 * c)
        mu_x, mu_y, e_xx, e_yy, e_xy = blurred.split(c, dim=1)
        c1 = (SSIM_K1 * data_range) ** 2
        c2 = (SSIM_K2 * data_range) ** 2
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        num = (2 * mu_xy + c1) * (2 * (e_xy - mu_xy) + c2)
        den = (mu_xx + mu_yy + c1) * ((e_xx - mu_xx) + (e_yy - mu_yy) + c2)
        # Every channel map has the same size, so the global mean is the mean of channel means.
        return (num / den).mean()


class SSIMLoss(nn.Module):
    """``1 - SSIM(pred, target)`` (see :func:`ssim_torch`)."""

    def __init__(self, data_range: float = 1.0):
        super().__init__()
        if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real) or not (
                math.isfinite(data_range) and data_range > 0):
            raise ConfigError(f"SSIMLoss data_range={data_range!r} is invalid; it must be a "
                              "finite number > 0 (1.0 for images in [0, 1]).")
        self.data_range = float(data_range)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - ssim_torch(pred, target, data_range=self.data_range)


# ---------------------------------------------------------------------------------- VGG-19
# torchvision vgg19().features: conv3x3(pad 1) + ReLU, max-pool 2x2 after each block.
_VGG19_BLOCKS = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))


def _vgg19_layer_names() -> tuple[str, ...]:
    names = []
    for b, (_, n) in enumerate(_VGG19_BLOCKS, start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


VGG19_LAYER_NAMES = _vgg19_layer_names()   # index in `features` == position in this tuple
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_PERCEPTUAL_LAYERS = {"relu2_2": 1.0, "relu3_4": 1.0, "relu4_4": 1.0}

_WEIGHTS_HELP = (
    "VGG-19 ImageNet weights are not downloaded by mirnet-edge. On a machine with torchvision, "
    "save them once with:\n"
    "    python -c \"import torch, torchvision; torch.save(torchvision.models.vgg19("
    "weights='IMAGENET1K_V1').features.state_dict(), 'vgg19.pth')\"\n"
    "(torchvision's own download, ~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth, works "
    "too), copy vgg19.pth here and pass its path (LossConfig.perceptual_weights / "
    "PerceptualLoss(weights_path=...)). A .safetensors file with the same keys is also accepted.")


def _expected_vgg_keys() -> dict[str, tuple[int, ...]]:
    keys: dict[str, tuple[int, ...]] = {}
    idx, cin = 0, 3
    for cout, n in _VGG19_BLOCKS:
        for _ in range(n):
            keys[f"{idx}.weight"] = (cout, cin, 3, 3)
            keys[f"{idx}.bias"] = (cout,)
            cin = cout
            idx += 2
        idx += 1
    return keys


class VGG19Features(nn.Module):
    """VGG-19 convolutional trunk returning the activations at the chosen layer names.

    ``self.features`` has torchvision's exact layout (indices 0..36), so its state dict keys are
    ``features.0.weight`` ... ``features.34.bias``. Input: ``Nx3xHxW`` RGB in ``[0, 1]``; the
    ImageNet mean/std normalisation happens inside. The network only runs up to the deepest
    requested layer. Names: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}`` (see
    ``VGG19_LAYER_NAMES``), e.g. relu1_2, relu2_2, relu3_4, relu4_4, relu5_4.
    """

    def __init__(self, layers=("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")):
        super().__init__()
        if isinstance(layers, str):
            layers = (layers,)
        layers = tuple(layers)
        if not layers:
            raise ConfigError("VGG19Features needs at least one layer name; valid names: "
                              f"{', '.join(VGG19_LAYER_NAMES)}.")
        bad = [name for name in layers if name not in VGG19_LAYER_NAMES]
        if bad:
            raise ConfigError(f"unknown VGG-19 layer name(s) {bad}; valid names: "
                              f"{', '.join(VGG19_LAYER_NAMES)} (e.g. relu2_2, relu3_4).")
        self.layers = layers
        self._indices = {name: VGG19_LAYER_NAMES.index(name) for name in layers}
        self._last = max(self._indices.values())
        modules: list[nn.Module] = []
        cin = 3
        for cout, n in _VGG19_BLOCKS:
            for _ in range(n):
                # ReLU not in place: a requested conv output must survive the following ReLU.
                modules += [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.ReLU()]
                cin = cout
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"VGG19Features takes Nx3xHxW RGB tensors in [0, 1], got shape "
                             f"{tuple(x.shape)}; convert grayscale with x.expand(-1, 3, -1, -1).")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted = {idx: name for name, idx in self._indices.items()}
        out: dict[str, torch.Tensor] = {}
        for idx, module in enumerate(self.features):
            x = module(x)
            if idx in wanted:
                out[wanted[idx]] = x
            if idx == self._last:
                break
        return out

    def load_vgg_state_dict(self, state_dict: Mapping[str, torch.Tensor], *,
                            source: str = "state dict") -> "VGG19Features":
        """Load torchvision ``vgg19().features`` weights with strict key and shape checks.

        Accepts keys ``0.weight`` ... ``34.bias``, the same prefixed ``features.``, or a full
        torchvision ``vgg19()`` state dict (``features.*`` + ``classifier.*``; the classifier
        is ignored). Raises ArtifactError naming missing, unexpected or mis-shaped keys.
        """
        if not isinstance(state_dict, Mapping):
            raise ArtifactError(f"{source} is a {type(state_dict).__name__}, not a state dict "
                                f"(a mapping of parameter names to tensors). {_WEIGHTS_HELP}")
        keys = list(state_dict)
        full_model = any(k.startswith("classifier.") for k in keys) and any(
            k.startswith("features.") for k in keys)
        cleaned: dict[str, torch.Tensor] = {}
        for key in keys:
            if full_model and key.startswith("classifier."):
                continue
            name = key[len("features."):] if key.startswith("features.") else key
            if name in cleaned:
                raise ArtifactError(f"{source} has the VGG-19 key {name!r} twice (with and "
                                    "without the 'features.' prefix); keep one of them.")
            cleaned[name] = state_dict[key]
        expected = _expected_vgg_keys()
        missing = [k for k in expected if k not in cleaned]
        unexpected = sorted(k for k in cleaned if k not in expected)
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected[:20]}"
                             + (f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else ""))
            raise ArtifactError(
                f"{source} is not a torchvision VGG-19 `features` state dict: "
                f"{'; '.join(parts)}. Valid keys: 0.weight, 0.bias, 2.weight, ... 34.bias "
                f"(optionally prefixed 'features.'). {_WEIGHTS_HELP}")
        def _shape(v) -> tuple | str:
            return tuple(v.shape) if isinstance(v, torch.Tensor) else f"a {type(v).__name__}"

        bad_shapes = [f"{k}: {_shape(cleaned[k])} (expected {shape})"
                      for k, shape in expected.items() if _shape(cleaned[k]) != shape]
        if bad_shapes:
            raise ArtifactError(f"{source} has VGG-19 tensors of the wrong shape: "
                                f"{'; '.join(bad_shapes[:8])}. Is it VGG-19 (not VGG-16)? "
                                f"{_WEIGHTS_HELP}")
        self.features.load_state_dict(cleaned, strict=True)
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike, layers=("relu1_2", "relu2_2", "relu3_4",
                                                          "relu4_4", "relu5_4")) -> "VGG19Features":
        """A frozen (eval, requires_grad False) network with weights from a local file."""
        net = cls(layers)
        net.load_vgg_state_dict(load_vgg19_state_dict(path), source=str(path))
        net.requires_grad_(False)
        return net.eval()


def load_vgg19_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read VGG-19 weights from a local ``.safetensors`` or torch (``.pth``/``.pt``) file.

    Torch files are read with ``torch.load(weights_only=True)``; a dict wrapping the weights
    under ``"state_dict"`` is unwrapped. Nothing is downloaded.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ArtifactError(f"VGG-19 weights file {str(p)!r} does not exist"
                            f"{' (it is a directory)' if p.is_dir() else ''}. {_WEIGHTS_HELP}")
    try:
        if p.suffix.lower() == ".safetensors":
            state = require("safetensors.torch", "train").load_file(str(p), device="cpu")
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except (ArtifactError, ImportError):   # ImportError: MissingDependencyError from require()
        raise
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        raise ArtifactError(f"cannot read VGG-19 weights from {str(p)!r} ({type(exc).__name__}: "
                            f"{exc}). Expected a .safetensors file or a torch.save()d state "
                            f"dict. {_WEIGHTS_HELP}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ArtifactError(f"{str(p)!r} holds a {type(state).__name__}, not a state dict. "
                            f"{_WEIGHTS_HELP}")
    return dict(state)


class PerceptualLoss(nn.Module):
    """Weighted distance between VGG-19 features of ``pred`` and ``target``.

    ``sum_l w_l * criterion(phi_l(pred), phi_l(target))`` with ``criterion`` "l1" (mean absolute)
    or "mse"/"l2" (mean squared). The VGG network is frozen (``requires_grad`` False, eval mode
    even when the parent module is put in train mode); gradients flow to ``pred`` only.
    """

    CRITERIA = ("l1", "mse", "l2")

    def __init__(self, weights_path: str | os.PathLike, layers: Mapping[str, float] | None = None,
                 criterion: str = "l1"):
        super().__init__()
        layers = dict(DEFAULT_PERCEPTUAL_LAYERS if layers is None else layers)
        if not layers:
            raise ConfigError("PerceptualLoss layers is empty; give a mapping of VGG-19 layer "
                              f"names to weights, e.g. {DEFAULT_PERCEPTUAL_LAYERS}.")
        for name, weight in layers.items():
            if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not (
                    math.isfinite(weight) and weight >= 0):
                raise ConfigError(f"PerceptualLoss layer weight {name}={weight!r} is invalid; "
                                  "it must be a finite number >= 0.")
        if criterion not in self.CRITERIA:
            raise ConfigError(f"PerceptualLoss criterion={criterion!r} is invalid; valid values: "
                              f"{', '.join(self.CRITERIA)}.")
        self.layer_weights = {name: float(w) for name, w in layers.items()}
        self.criterion = "mse" if criterion == "l2" else criterion
        self.vgg = VGG19Features.from_file(weights_path, tuple(self.layer_weights))

    def train(self, mode: bool = True) -> "PerceptualLoss":
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_nchw(pred, target, "PerceptualLoss")
        dist = F.l1_loss if self.criterion == "l1" else F.mse_loss
        feats_pred = self.vgg(pred)
        with torch.no_grad():
            feats_target = self.vgg(target.detach())
        total = pred.new_zeros(())
        for name, weight in self.layer_weights.items():
            if weight:
                total = total + weight * dist(feats_pred[name], feats_target[name])
        return total

    def extra_repr(self) -> str:
        return f"layers={self.layer_weights}, criterion={self.criterion!r}"


# ------------------------------------------------------------------------------ combination
_TERMS = ("charbonnier", "l1", "mse", "ssim", "perceptual")


@dataclass
class LossConfig:
    """Weights of the loss terms (0 disables a term) and the local VGG-19 weights file.

    ``from_dict`` of a mapping that names terms keeps only those; an empty mapping (or none) is
    the default, Charbonnier alone."""

    charbonnier: float = 1.0
    l1: float = 0.0
    mse: float = 0.0
    ssim: float = 0.0
    perceptual: float = 0.0
    perceptual_weights: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping | None) -> "LossConfig":
        """Build from a mapping (a YAML ``loss:`` section); unknown keys are a ConfigError."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"loss config must be a mapping of term names to weights, got a "
                              f"{type(data).__name__}: {data!r}; e.g. {{charbonnier: 1.0}}.")
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in valid]
        if unknown:
            raise ConfigError(f"unknown loss config key(s) {unknown}; valid keys: "
                              f"{', '.join(valid)}. Fix the spelling or remove them.")
        if any(k in _TERMS for k in data):
            # A mapping that names any term means exactly those terms: `{mse: 1.0}` trains on MSE
            # alone, not on MSE plus the default Charbonnier.
            data = {**dict.fromkeys(_TERMS, 0.0), **data}
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> "LossConfig":
        """Check the weights (finite, >= 0, not all 0) and the perceptual path; coerce types."""
        for name in _TERMS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
                    math.isfinite(value) and value >= 0):
                raise ConfigError(f"loss weight {name}={value!r} is invalid; it must be a finite "
                                  "number >= 0 (0 disables the term).")
            setattr(self, name, float(value))
        if self.perceptual_weights is not None:
            if not isinstance(self.perceptual_weights, (str, os.PathLike)):
                raise ConfigError(f"perceptual_weights={self.perceptual_weights!r} is invalid; it "
                                  "must be the path of a local VGG-19 weights file or null.")
            self.perceptual_weights = os.fspath(self.perceptual_weights)
        if all(getattr(self, name) == 0 for name in _TERMS):
            raise ConfigError(f"all loss weights are 0 ({', '.join(_TERMS)}); set at least one "
                              "> 0, e.g. charbonnier: 1.0.")
        if self.perceptual > 0 and not self.perceptual_weights:
            raise ConfigError(
                f"perceptual={self.perceptual} needs perceptual_weights (the path of a local "
                "VGG-19 weights file), got None; set perceptual_weights: /path/to/vgg19.pth or "
                "perceptual: 0. " + _WEIGHTS_HELP)
        return self


class CombinedLoss(nn.Module):
    """Weighted sum of the enabled terms.

    ``forward(pred, target)`` returns ``(total, terms)``: the weighted sum as a scalar tensor and
    ``{name: unweighted value as float}`` for each enabled term (one device sync per call).
    """

    def __init__(self, terms: Mapping[str, tuple[float, nn.Module]]):
        super().__init__()
        if not terms:
            raise ConfigError("CombinedLoss needs at least one term with a weight > 0.")
        self.weights = {name: float(w) for name, (w, _) in terms.items()}
        self.terms = nn.ModuleDict({name: module for name, (_, module) in terms.items()})

    def forward(self, pred: torch.Tensor, target: torch.Tensor
                ) -> tuple[torch.Tensor, dict[str, float]]:
        values = {name: module(pred, target) for name, module in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in values.items())
        # One device sync for all the logged values.
        logged = torch.stack([v.detach().float() for v in values.values()]).tolist()
        return total, dict(zip(values, logged))

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def build_loss(cfg: LossConfig | Mapping | None = None) -> CombinedLoss:
    """The training criterion: ``loss, terms = build_loss(cfg)(pred, target)``."""
    if cfg is None or isinstance(cfg, Mapping):
        cfg = LossConfig.from_dict(cfg)
    elif not isinstance(cfg, LossConfig):
        raise ConfigError(f"build_loss() takes a LossConfig or a mapping, got "
                          f"{type(cfg).__name__}; use LossConfig.from_dict(...).")
    cfg.validate()
    factories = {
        "charbonnier": lambda: CharbonnierLoss(1e-3),
        "l1": L1Loss,
        "mse": MSELoss,
        "ssim": SSIMLoss,
        "perceptual": lambda: PerceptualLoss(cfg.perceptual_weights),
    }
    terms = {name: (getattr(cfg, name), factories[name]())
             for name in _TERMS if getattr(cfg, name) > 0}
    return CombinedLoss(terms)
