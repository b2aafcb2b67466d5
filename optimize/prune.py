"""Structured channel pruning of MIRNet-v2 with torch-pruning, and a short fine-tune afterwards.

``prune(model, macs_ratio=0.5)`` returns a pruned *copy* with half the MACs removed. It traces the
network once with torch-pruning's ``DependencyGraph`` (autograd-based), which groups every
convolution whose channels must be removed together, then runs a ``MetaPruner`` in small
iterative steps until the requested share of MACs (or parameters) is gone.

How the MIRNet-v2 couplings are kept consistent:

- **Shared weights.** Each MRB calls the same RCB and SKFF modules ``width`` times. torch-pruning
  merges every call of a reused module into one graph node, so both rounds' inputs and outputs
  join one group; pruning edits the module objects in place, so the rounds still share them.
- **Residual adds** (``conv_in`` -> RRGs -> ``conv_out``, MRB and RCB residuals, SKFF's weighted
  sum, the up/down-samplers feeding a stream) are element-wise ops in the graph: every conv that
  writes or reads a stream lands in that stream's group and loses the same channel indices.
- **SKFF.** ``torch.stack`` / ``sum`` / ``softmax`` are element-wise to torch-pruning: the two
  stacked inputs and the per-branch ``fcs`` outputs are pruned with the same indices; the squeeze
  (``conv_du`` -> ``fcs``) is its own group.
- **Context attention.** ``bmm(x, softmax(conv_mask(x)))`` looks element-wise to torch-pruning,
  which would try to prune ``conv_mask``'s single output channel with the stream's indices. For
  the duration of pruning each ``conv_mask`` is given a marker subclass whose torch-pruning handler
  prunes its *input* channels like any conv and never its output (and reports no prunable output,
  so it is never a group root and never blocks a group). Its class is restored afterwards.
- **Grouped convs** (RCB convs with groups 1/2/4): torch-pruning's channel-group support. A group
  containing a conv with ``g`` groups ranks channels per position within a group (importance
  averaged over the ``g`` slices) and removes the same positions from every slice, so channel counts
  stay divisible by ``g``. Groups are powers of two, so a stream shared by RRGs with groups 1, 2
  and 4 is pruned with the largest and stays divisible by all.
- **Ends.** The input (pixel-unshuffled image) is never a prunable dimension; ``conv_out`` (image
  channels x shuffle^2 before PixelShuffle) is an ignored layer, so only its input side is pruned.

The pruned model keeps its ``config``; its actual conv shapes go into the weights manifest
(``save_weights`` records ``pruned.layers``) and ``mirnet.sdk.model.load_model`` rebuilds it
without torch-pruning.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mirnet.sdk.errors import ConfigError, require
from mirnet.sdk.mixture import ModelInputs, model_inputs
from mirnet.sdk.model.arch import MRB, ContextBlock, MIRNetV2
from mirnet.sdk.model.complexity import count_macs, count_params

__all__ = ["prune", "finetune", "prune_file", "check_pruned", "calibration_batches",
           "IMPORTANCES"]

IMPORTANCES = ("l1", "l2", "taylor")
# Step counts prune() tries by default, in this order (see its ``steps``): 100, the one schedule it ran before.
SCHEDULES = (100, 90, 110, 80, 120, 130, 60, 150, 40)
CLOSE_ENOUGH = 0.005  # a schedule overshooting the target by at most this much ends the search


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------

def _ratio(name: str, value, *, allow_zero: bool = True, what: str = "") -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
          and (0 <= value if allow_zero else 0 < value) and value < 1)
    if not ok:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ConfigError(f"{name}={value!r}: must be a number in {interval}{what}")
    return float(value)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name}={value!r}: must be an integer >= 1")
    return int(value)


# ---------------------------------------------------------------------------------------------
# torch-pruning glue
# ---------------------------------------------------------------------------------------------

class _MaskConv(nn.Conv2d):
    """Marker class given to ``ContextBlock.conv_mask`` while pruning (see module docstring)."""


def _mask_pruner(tp):
    class MaskConvPruner(tp.pruner.function.ConvPruner):
        """Prunes a context block's ``conv_mask`` on its input side only."""

        def prune_out_channels(self, layer, idxs):
            return layer  # the single attention-logit channel is never pruned

        def get_out_channels(self, layer):
            return None  # not a group root, never counted as prunable output

    return MaskConvPruner()


class _CostNormalized:
    """Importance per unit of cost (MACs or parameters removed with the channel), so that global
    ranking prefers channels that are cheap in quality and expensive in compute."""

    def __init__(self, base, spatial: dict[nn.Module, int], per_pixel: bool):
        self.base, self.spatial, self.per_pixel = base, spatial, per_pixel
        self.DG = None

    def __call__(self, group):
        imp = self.base(group)
        if imp is None:
            return None
        cost = 0.0
        for dep, _ in group:
            layer = dep.target.module
            if not isinstance(layer, nn.Conv2d):
                continue
            k = layer.kernel_size[0] * layer.kernel_size[1]
            if self.DG.is_out_channel_pruning_fn(dep.handler):
                if isinstance(layer, _MaskConv):
                    continue
                per_channel = layer.in_channels // layer.groups * k
            else:
                per_channel = layer.out_channels // layer.groups * k
            cost += per_channel * (self.spatial.get(layer, 1) if self.per_pixel else 1)
        return imp / max(cost, 1.0)


class _KeepConvGroups:
    """Freezes a channel group once one of its grouped convs is down to one input channel per conv
    group: torch_pruning would then read that conv as depthwise and fail (IndexError) while ranking
    it, and the conv cannot lose more channels without losing a whole conv group."""

    def __init__(self, base, grouped: set[nn.Module], in_channels_fn):
        self.base, self.grouped, self.in_channels_fn = base, grouped, in_channels_fn

    def __call__(self, group):
        for dep, _ in group:
            layer = dep.target.module
            if layer in self.grouped and layer.in_channels == layer.groups and dep.handler == self.in_channels_fn:
                return None
        return self.base(group)


def _importance(tp, name: str):
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    return tp.importance.GroupTaylorImportance()


def _conv_output_pixels(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, int]:
    pixels: dict[nn.Module, int] = {}

    def hook(module, _inp, out):
        pixels[module] = out.shape[-2] * out.shape[-1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return pixels


def _calibration_grads(model: nn.Module, batches: Sequence, device) -> None:
    from mirnet.train.losses import CharbonnierLoss

    criterion = CharbonnierLoss()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for inputs, targets in batches:
            loss = criterion(model(inputs.to(device)), targets.to(device)) / len(batches)
            loss.backward()


def check_pruned(model: MIRNetV2) -> None:
    """Raise ConfigError unless every conv's weight matches its in/out/groups and channel counts
    are divisible by the conv groups (a structural sanity check of a pruned network)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.in_channels % m.groups or m.out_channels % m.groups:
                raise ConfigError(f"pruned conv {name}: in {m.in_channels} / out {m.out_channels} "
                                  f"not divisible by groups {m.groups}")
            want = (m.out_channels, m.in_channels // m.groups, *m.kernel_size)
            if tuple(m.weight.shape) != want:
                raise ConfigError(f"pruned conv {name}: weight {tuple(m.weight.shape)} != {want}")


# ---------------------------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------------------------

def prune(model: MIRNetV2, *, macs_ratio: float | None = None, params_ratio: float | None = None,
          example_hw: tuple[int, int] = (64, 64), importance: str = "l1",
          calib_batches: Sequence | None = None, global_pruning: bool = False,
          max_layer_ratio: float = 0.9, round_to: int | None = None,
          steps: int | None = None) -> MIRNetV2:
    """A pruned copy of ``model`` with at least ``macs_ratio`` of its MACs (or ``params_ratio`` of
    its parameters) removed; ``model`` itself is not modified. Ratio 0 returns an unchanged copy.

    importance: ``"l1"`` / ``"l2"`` (group weight magnitude) or ``"taylor"`` (first-order Taylor,
        |w * dL/dw|, from ``calib_batches``: a sequence of ``(input, target)`` NCHW tensor pairs,
        re-run before every pruning step).
    global_pruning: False (default) removes the same share of channels from every group each step
        ("uniform"); True ranks channels across groups by importance per MAC (per parameter with
        ``params_ratio``), which removes cheap-to-lose, expensive-to-run channels first.
    max_layer_ratio: no group loses more than this share of its channels.
    round_to: keep channel counts (per conv group slice) multiples of this (e.g. 8 for GPUs).
    steps: the channel-sparsity schedule (up to ``max_layer_ratio``) is cut into this many steps;
        pruning stops at the first step that reaches the target. One step can overshoot by far
        more than its share of channels: a stream shared with grouped convs is ranked in units of
        one channel per conv group (4 channels of a 16-channel stream, a quarter of its cost), and
        where one step's threshold crosses such a unit it takes them all (denoise-lite with three
        groups and one exchange round, half the MACs: 52.5% at 100 steps, 50.3% at 90, 78% at
        200). So by default (``None``) global pruning runs the schedules of ``SCHEDULES`` in turn
        until one lands within ``CLOSE_ENOUGH`` above the target (three of the four cases
        measured stopped at the first or second), else keeps the closest above it (the earliest
        on a tie); give a number to run only that one. Uniform pruning takes the same share of
        every group at each step and lands on the same share of MACs whatever the schedule (it
        runs the first).
    example_hw: the input size used to trace the graph and count MACs (rounded up to the model's
        pad multiple).
    """
    tp = require("torch_pruning", "optimize")
    if not isinstance(model, MIRNetV2):
        raise ConfigError(f"prune() takes a MIRNetV2 model, got {type(model).__name__}")
    if (macs_ratio is None) == (params_ratio is None):
        raise ConfigError(f"give exactly one of macs_ratio or params_ratio (got macs_ratio={macs_ratio!r}, "
                          f"params_ratio={params_ratio!r})")
    target_name, target = (
        ("macs_ratio", _ratio("macs_ratio", macs_ratio, what=", the share of MACs to remove (e.g. 0.5)"))
        if macs_ratio is not None else
        ("params_ratio", _ratio("params_ratio", params_ratio, what=", the share of parameters to remove (e.g. 0.5)")))
    if importance not in IMPORTANCES:
        raise ConfigError(f"importance={importance!r}: valid values are {IMPORTANCES}")
    max_layer_ratio = _ratio("max_layer_ratio", max_layer_ratio, allow_zero=False,
                             what=", the most any channel group may lose (e.g. 0.9)")
    if steps is not None:
        schedules = (_positive_int("steps", steps),)
    else:  # uniform steps cross a group's units at the same share whatever the schedule
        schedules = SCHEDULES if global_pruning else SCHEDULES[:1]
    if round_to is not None:
        round_to = _positive_int("round_to", round_to)
    if (not isinstance(example_hw, (tuple, list)) or len(example_hw) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in example_hw)):
        raise ConfigError(f"example_hw={example_hw!r}: must be (height, width), positive integers")
    if importance == "taylor":
        if not calib_batches:
            raise ConfigError("importance='taylor' needs calib_batches: a list of (input, target) tensor "
                              "pairs to take gradients on; or use importance='l1'")
        calib_batches = list(calib_batches)
    if target == 0:
        return copy.deepcopy(model).eval()
    m = model.config.pad_multiple
    h, w = (-(-int(v) // m) * m for v in example_hw)
    count = (lambda net: count_macs(net, h, w)) if target_name == "macs_ratio" else count_params
    base = count(model)
    best, best_achieved, most = None, math.inf, 0.0
    for n in schedules:
        pruned, achieved = _prune_schedule(tp, model, n, target=target, count=count, base=base, hw=(h, w),
                                           per_mac=target_name == "macs_ratio", importance=importance,
                                           calib_batches=calib_batches, global_pruning=global_pruning,
                                           max_layer_ratio=max_layer_ratio, round_to=round_to)
        most = max(most, achieved)
        if target <= achieved < best_achieved:
            best, best_achieved = pruned, achieved
        if best_achieved - target <= CLOSE_ENOUGH:
            break
    if best is None:
        raise ConfigError(
            f"{target_name}={target}: pruning stopped at {most:.3f} at most, with every group at its "
            f"max_layer_ratio={max_layer_ratio} (or its grouped convs at one channel per conv group); ask "
            "for less, or raise max_layer_ratio")
    check_pruned(best)
    with torch.no_grad():
        out = best(torch.rand(1, best.config.in_channels, h, w, device=next(best.parameters()).device))
    if out.shape[1] != best.config.out_channels:
        raise ConfigError(f"pruned model outputs {out.shape[1]} channels, expected {best.config.out_channels}")
    return best.eval()


def _prune_schedule(tp, model: MIRNetV2, steps: int, *, target: float, count, base: int, hw: tuple[int, int],
                    per_mac: bool, importance: str, calib_batches, global_pruning: bool,
                    max_layer_ratio: float, round_to: int | None) -> tuple[MIRNetV2, float]:
    """One run of :func:`prune` with the channel-sparsity schedule cut into ``steps`` steps: a
    pruned copy of ``model``, stopped at the first step that removes ``target`` of ``base``, and
    the share it removed."""
    pruned = copy.deepcopy(model).eval()
    pruned.requires_grad_(True)  # the dependency graph is traced through autograd
    device = next(pruned.parameters()).device
    example = torch.rand(1, pruned.config.in_channels, *hw, device=device)
    masks = [blk.conv_mask for blk in pruned.modules() if isinstance(blk, ContextBlock)]
    for conv in masks:
        conv.__class__ = _MaskConv
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra intra-op threads only add overhead (10x on a busy CPU)
    try:
        imp = _KeepConvGroups(_importance(tp, importance),
                              {m for m in pruned.modules()
                               if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels},
                              tp.pruner.function.prune_conv_in_channels)
        if global_pruning:
            imp = _CostNormalized(imp, _conv_output_pixels(pruned, example), per_mac)
        with torch.enable_grad():
            pruner = tp.pruner.MetaPruner(
                pruned, example, importance=imp, global_pruning=global_pruning,
                pruning_ratio=max_layer_ratio, max_pruning_ratio=max_layer_ratio, iterative_steps=steps,
                round_to=round_to, ignored_layers=[pruned.conv_out],
                customized_pruners={_MaskConv: _mask_pruner(tp)})
        if global_pruning:
            imp.DG = pruner.DG
        achieved = 0.0
        for _ in range(steps):
            if importance == "taylor":
                _calibration_grads(pruned, calib_batches, device)
            with torch.enable_grad():
                pruner.step()
            achieved = 1 - count(pruned) / base
            if achieved >= target:
                break
    finally:
        torch.set_num_threads(threads)
        for conv in masks:
            conv.__class__ = nn.Conv2d
        pruned.zero_grad(set_to_none=True)
    return pruned, achieved


def prune_depth(model: MIRNetV2, *, rrgs: int | None = None, width: int | None = None) -> MIRNetV2:
    """A copy of ``model`` that keeps its first ``rrgs`` recursive residual groups and runs each
    MRB's weight-shared exchange ``width`` times (None: unchanged). Every kept layer keeps its
    trained weights (the dropped rounds' up-samplers and the dropped groups go), so fine-tuning
    starts from the original's features. Channel-pruned models keep their channel layout.

    Channel pruning removes MACs, but on the edge variants latency follows the number of
    full-feature-map operations (pooling, resampling, attention, element-wise ops) more than the
    MACs; removing blocks removes those."""
    cfg = model.config
    rrgs = cfg.n_rrg if rrgs is None else rrgs
    width = cfg.width if width is None else width
    for flag, value, high in (("--rrgs", rrgs, cfg.n_rrg), ("--width", width, cfg.width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= high:
            raise ConfigError(f"{flag} {value!r}: keep from 1 to {high} (the model has {high})")
    out = copy.deepcopy(model).eval()
    out.body = nn.Sequential(*list(out.body)[:rrgs])
    for mrb in (m for m in out.modules() if isinstance(m, MRB)):
        for r in range(width, mrb.rounds):
            for j in range(len(mrb.names) - 1):
                delattr(mrb, f"up{j + 2}{j + 1}_{r + 1}")
        mrb.rounds = width
    out.config = cfg.replace(n_rrg=rrgs, width=width)
    return out


# ---------------------------------------------------------------------------------------------
# fine-tune
# ---------------------------------------------------------------------------------------------

def _train_set(data_dir: str | Path | None, inputs: ModelInputs, seed: int):
    """A ``TrainSet`` that makes ``inputs`` from the clean images in ``data_dir`` (or its pairs)."""
    from mirnet.train.data import TrainSet, sources_for

    return TrainSet(sources_for(inputs, data_dir), seed=seed)


def calibration_batches(data_dir: str | Path | None, inputs: ModelInputs, n_batches: int = 4, *, batch: int = 4,
                        patch: int = 64, seed: int = 0) -> list:
    """``n_batches`` ``(input, target)`` batches from ``data_dir`` (as :func:`finetune` reads it),
    for ``prune(importance="taylor", calib_batches=...)``."""
    from mirnet.train.data import ProgressiveSchedule, StepBatchSampler

    dataset = _train_set(data_dir, inputs, seed)
    sampler = StepBatchSampler(ProgressiveSchedule([n_batches], [patch], [batch]))
    out = []
    for keys in sampler:
        items = [dataset[k] for k in keys]
        out.append((torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])))
    return out


def finetune(model: MIRNetV2, data_dir: str | Path | None, steps: int, *, inputs: ModelInputs,
             teacher: MIRNetV2 | None = None, teacher_weight: float = 0.5, lr: float = 1e-3, batch: int = 8,
             patch: int = 64, ema_decay: float = 0.0, weight_decay: float = 1e-4,
             grad_clip: float = 0.01, warmup_steps: int = 0, seed: int = 0, workers: int = 0,
             amp_cpu: bool = False, channels_last: bool = False,
             device: str | torch.device | None = None, quiet: bool = False) -> MIRNetV2:
    """Fine-tune ``model`` in place for ``steps`` steps and return it (the EMA copy when
    ``ema_decay > 0``) in eval mode.

    The crops are the model's own ``inputs`` (:func:`mirnet.sdk.mixture.model_inputs`) made from
    the clean images in ``data_dir`` (or real pairs). Trains with ``mirnet train``'s step and loop
    (:class:`mirnet.train.loop.TrainStep`: AdamW, cosine LR over one period down to ``lr / 100``,
    gradient clipping, EMA, AMP on CUDA) on ``TrainSet`` crops drawn by ``StepBatchSampler``,
    Charbonnier loss against the ground truth, or with a ``teacher`` (the unpruned model)
    :class:`mirnet.train.losses.DistillationLoss`: ``teacher_weight`` of it against the teacher's
    output, the rest against the ground truth. ``workers``: DataLoader processes making the crops
    (the camera model's encoders are slow; one worker overlaps them with the training step).
    ``amp_cpu`` / ``channels_last``: as in ``mirnet train``'s config (bfloat16 autocast and NHWC
    layout on the CPU; the teacher runs float32).
    """
    from torch.utils.data import DataLoader

    from mirnet.train.data import ProgressiveSchedule, StepBatchSampler
    from mirnet.train.loop import TrainStep, run_steps
    from mirnet.train.losses import CharbonnierLoss, DistillationLoss, distillation_target

    steps = _positive_int("finetune steps", steps)
    batch = _positive_int("batch", batch)
    patch = _positive_int("patch", patch)
    m = model.config.pad_multiple
    if patch % m:
        raise ConfigError(f"patch={patch}: must be a multiple of the model's pad multiple {m} (e.g. {m * 8})")
    dataset = _train_set(data_dir, inputs, seed)
    schedule = ProgressiveSchedule([steps], [patch], [batch])
    loader = DataLoader(dataset, batch_sampler=StepBatchSampler(schedule), num_workers=workers)

    if device is not None:
        model = model.to(device)
    torch.manual_seed(seed)
    if teacher is not None:
        teacher = teacher.to(next(model.parameters()).device).eval()
        criterion, target = DistillationLoss(teacher_weight), distillation_target(teacher)
    else:
        criterion, target = CharbonnierLoss(), None
    step = TrainStep(model, criterion, lr=lr, periods=[steps], eta_mins=[lr * 0.01],
                     warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
                     ema_decay=ema_decay, amp_cpu=amp_cpu, channels_last=channels_last, target=target)
    run_steps(step, loader, total=steps, desc="fine-tune", quiet=quiet)
    model.eval()
    return step.averaged.to(memory_format=torch.contiguous_format).requires_grad_(True).eval()


# ---------------------------------------------------------------------------------------------
# prune a weights file: what `mirnet prune` runs
# ---------------------------------------------------------------------------------------------

def prune_file(model_path: str | Path, out: str | Path, *, data: str | Path,
               macs_ratio: float | None = None, params_ratio: float | None = None,
               finetune_steps: int = 0, eval_data: str | Path | None = None, sigma: float | None = None,
               protocol: str | None = None, teacher_weight: float = 0.5, rrgs: int | None = None,
               width: int | None = None, workers: int = 1,
               eval_limit: int | None = 4, eval_crop: int | None = 256, importance: str = "l1",
               global_pruning: bool = False, round_to: int | None = None, lr: float = 1e-3,
               batch: int = 8, patch: int = 64, ema_decay: float = 0.0, seed: int = 0,
               amp_cpu: bool = False, channels_last: bool = False, quiet: bool = False, log=None) -> dict:
    """Load weights, report params/MACs/PSNR, prune, fine-tune on ``data`` (distilled from the
    unpruned model with ``teacher_weight``; 0 trains on the ground truth only), evaluate again and
    write ``out`` (.safetensors + manifest with ``pruned`` and ``prune`` records). Returns the
    ``prune`` record. ``rrgs``/``width`` first remove blocks (:func:`prune_depth`), then channels
    (:func:`prune`) until ``macs_ratio``/``params_ratio`` of the *original* model's MACs /
    parameters are gone (no channels when the blocks already took that much); give at least one.
    Fine-tuning and PSNR use the model's own inputs
    (:func:`mirnet.sdk.mixture.model_inputs`: its training degradations, or AWGN ``sigma``, camera
    preset ``protocol``, or the pairs of a folder with paired sub-folders), made from ``data`` and
    ``eval_data`` (default ``data``)."""
    from mirnet.sdk import artifact, zoo
    from mirnet.sdk.model import load_model, save_weights
    from mirnet.train.loop import validate

    log = log or (lambda _msg: None)
    if macs_ratio is not None and params_ratio is not None:
        raise ConfigError(f"give one of --macs-ratio or --params-ratio, not both (got {macs_ratio!r} and "
                          f"{params_ratio!r})")
    channels = macs_ratio is not None or params_ratio is not None
    if not channels and rrgs is None and width is None:
        raise ConfigError("say what to remove: --macs-ratio R or --params-ratio R (channels), and/or --rrgs N / "
                          "--width W (blocks)")
    if channels:
        flag, value = ("--macs-ratio", macs_ratio) if macs_ratio is not None else ("--params-ratio", params_ratio)
        _ratio(flag, value, allow_zero=False, what=", the share to remove, e.g. 0.5")
        require("torch_pruning", "optimize")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"-o {out}: the pruned model is written as .safetensors; got suffix {out.suffix!r}")
    if isinstance(finetune_steps, bool) or not isinstance(finetune_steps, numbers.Integral) or finetune_steps < 0:
        raise ConfigError(f"--finetune-steps {finetune_steps!r}: must be an integer >= 0")
    for flag, folder in (("--data", data), ("--eval-data", eval_data)):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder}: not a folder; give a folder of clean images or of "
                              f"paired sub-folders (low/high, NOISY/GT, input/target, lq/gt)")
    source = zoo.resolve_weights(model_path)
    manifest = artifact.read_manifest(source, kind="weights") if source.suffix == ".safetensors" else None
    variant = (manifest or {}).get("variant")
    inputs = model_inputs(manifest, folder=data, sigma=sigma, protocol=protocol, model=source.name)
    eval_inputs = inputs if eval_data is None else model_inputs(manifest, folder=eval_data, sigma=sigma,
                                                                protocol=protocol, model=source.name)
    model = load_model(source)
    device = torch.device("cpu")
    evalset = eval_inputs.evalset(str(eval_data or data), limit=eval_limit, crop=eval_crop, seed=seed)

    def psnr_of(net) -> float:
        return validate(net, evalset, device)["val_psnr"]

    def counts(net) -> tuple[int, int]:
        return count_params(net), count_macs(net, 256, 256)

    params0, macs0 = counts(model)
    log(f"before:     {params0:,} params, {macs0 / 1e9:.3f} GMAC per 256x256 frame")
    psnr0 = psnr_of(model)
    log(f"before:     PSNR {psnr0:.2f} dB on {evalset!r}")
    calib = calibration_batches(data, inputs, batch=min(batch, 4), patch=patch, seed=seed) \
        if importance == "taylor" else None
    teacher = model if finetune_steps and teacher_weight > 0 else None  # prune_depth and prune leave it as it is
    pruned = prune_depth(model, rrgs=rrgs, width=width)
    if channels:
        # The ratio counts against the original model: the channels give what the removed blocks
        # have not already taken.
        ratio, before, after = (macs_ratio, macs0, counts(pruned)[1]) if macs_ratio is not None else \
            (params_ratio, params0, counts(pruned)[0])
        left = max(0.0, 1 - (1 - ratio) * before / after)
        pruned = prune(pruned, importance=importance, calib_batches=calib, global_pruning=global_pruning,
                       round_to=round_to, **{"macs_ratio" if macs_ratio is not None else "params_ratio": left})
    params1, macs1 = counts(pruned)
    log(f"pruned:     {params1:,} params ({1 - params1 / params0:.1%} fewer), {macs1 / 1e9:.3f} GMAC "
        f"({1 - macs1 / macs0:.1%} fewer)")
    psnr1 = psnr_of(pruned)
    log(f"pruned:     PSNR {psnr1:.2f} dB")
    psnr2 = None
    if finetune_steps:
        pruned = finetune(pruned, data, finetune_steps, inputs=inputs, teacher=teacher,
                          teacher_weight=teacher_weight, lr=lr, batch=batch, patch=patch,
                          ema_decay=ema_decay, seed=seed, workers=workers, amp_cpu=amp_cpu,
                          channels_last=channels_last, quiet=quiet)
        psnr2 = psnr_of(pruned)
        log(f"fine-tuned: PSNR {psnr2:.2f} dB after {finetune_steps} steps")
    record = {
        "target": {"macs_ratio": macs_ratio, "params_ratio": params_ratio, "rrgs": rrgs, "width": width},
        "importance": importance, "global_pruning": global_pruning, "round_to": round_to,
        "params_before": params0, "params_after": params1,
        "macs_before": macs0, "macs_after": macs1, "macs_at": [256, 256],
        "macs_ratio": 1 - macs1 / macs0, "params_ratio": 1 - params1 / params0,
        "inputs": inputs.record(),
        "eval": {"data": str(eval_data or data), "description": evalset.description, "n": len(evalset),
                 "psnr_before": psnr0, "psnr_pruned": psnr1, "psnr_finetuned": psnr2},
        "finetune": {"steps": finetune_steps, "data": str(data), "lr": lr, "batch": batch, "patch": patch,
                     "ema_decay": ema_decay, "seed": seed, "amp_cpu": amp_cpu, "channels_last": channels_last,
                     "distillation": {"teacher": source.name, "teacher_weight": teacher_weight} if teacher else None}
        if finetune_steps else None,
    }
    pruned_info = {"macs_ratio": record["macs_ratio"], "params_ratio": record["params_ratio"],
                   "target": record["target"], "importance": importance, "global_pruning": global_pruning}
    save_weights(pruned.cpu().eval(), out, variant=variant if pruned.config == model.config else None, source=source,
                 pruned=pruned_info,
                 prune=record, **({"training": manifest["training"]} if (manifest or {}).get("training") else {}))
    return record
