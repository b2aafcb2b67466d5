"""The one training step and loop, and the training run built on them.

:class:`TrainStep` is one optimizer step: forward (AMP on CUDA), loss against a target (the
batch's clean image, or what a ``target`` function makes of the batch, e.g. a teacher's output
for distillation), backward, gradient clipping, AdamW, the cosine-with-restarts LR schedule and
the EMA with its step-dependent warm-up. :func:`run_steps` drives it over any iterable of
``(input, target)`` batches with a progress bar. ``mirnet train`` (:class:`Trainer`), the
fine-tune after pruning (``mirnet.optimize.prune.finetune``) and QAT (``mirnet.optimize.quantize``)
all train through these two.

:class:`Trainer` adds atomic checkpoints, exact resume, DDP through torchrun, validation and JSONL
metrics. Exact resume: the data of step ``s`` is a pure function of ``(seed, s)`` (see
``data.TrainSet``), and the checkpoint holds the model, EMA, optimizer, LR scheduler, AMP scaler
and step, so a run killed and resumed from its last checkpoint continues as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from mirnet.sdk.artifact import atomic_write_bytes, file_record, read_manifest
from mirnet.sdk.errors import ArtifactError, ConfigError, require
from mirnet.sdk.evalsets import EvalSet
from mirnet.sdk.evaluate import score
from mirnet.sdk.model import create_model, load_model, save_weights
from mirnet.sdk.model.arch import deepen, to_gray
from mirnet.sdk.model.config import get_variant
from mirnet.sdk.ops import run_padded
from mirnet.sdk.zoo import resolve_weights

from .config import TrainConfig
from .data import StepBatchSampler, TrainSet
from .losses import DistillationLoss, build_loss, distillation_target
from .schedule import CosineRestartCyclic

CHECKPOINT = "last.pt"


class EMA:
    """Exponential moving average of a model's parameters and buffers. The decay warms up as
    ``min(decay, (1 + step) / (10 + step))`` so early averages do not cling to the random init."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_v, v in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema_v.copy_(v)


class TrainStep:
    """One optimizer step of ``model``: ``loss, terms = step(inputs, targets)``.

    ``criterion(pred, target)`` returns a scalar loss tensor or ``(loss, {name: float})``.
    ``target(inputs, targets)``, when given, makes the tensor the prediction is compared with (run
    without gradients, e.g. ``lambda x, _: teacher(x)`` for distillation); by default it is
    ``targets``. AdamW over the parameters that require gradients, the LR of
    :class:`~mirnet.train.schedule.CosineRestartCyclic` (``periods``, ``restart_weights`` (default
    1 each), ``eta_mins``, ``warmup_steps``), gradient-norm clipping at ``grad_clip`` (0: off), an
    :class:`EMA` of the weights when ``ema_decay > 0``, float16 autocast with a gradient scaler
    when ``amp`` and the model is on CUDA. ``net`` is what the forward pass calls (a
    DistributedDataParallel wrapper of ``model``; default ``model``). Under torch.distributed the
    returned loss is the mean over the ranks."""

    def __init__(self, model: torch.nn.Module, criterion: Callable, *, lr: float, periods: Sequence[int],
                 restart_weights: Sequence[float] | None = None, eta_mins: Sequence[float] = (0.0,),
                 warmup_steps: int = 0, betas: Sequence[float] = (0.9, 0.999), weight_decay: float = 0.0,
                 grad_clip: float = 0.0, ema_decay: float = 0.0, amp: bool = True, amp_cpu: bool = False,
                 channels_last: bool = False,
                 target: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 net: torch.nn.Module | None = None):
        if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"lr={lr!r}: the learning rate must be a finite number > 0 (e.g. 2e-4)")
        if not (isinstance(ema_decay, numbers.Real) and 0 <= ema_decay < 1):
            raise ConfigError(f"ema_decay={ema_decay!r}: must be in [0, 1) (0 disables the EMA)")
        if not (isinstance(grad_clip, numbers.Real) and grad_clip >= 0):
            raise ConfigError(f"grad_clip={grad_clip!r}: the gradient-norm limit must be >= 0 (0 disables it)")
        self.model, self.net = model, net or model
        self.criterion, self.target = criterion, target
        self.grad_clip = float(grad_clip)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        self.scheduler = CosineRestartCyclic(self.optimizer, periods, restart_weights or [1.0] * len(periods),
                                             eta_mins, warmup_steps=warmup_steps)
        device = next(model.parameters()).device
        self.use_amp = bool(amp) and device.type == "cuda"
        self.use_amp_cpu = bool(amp_cpu) and device.type == "cpu"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.ema = EMA(model, float(ema_decay)) if ema_decay > 0 else None
        self.step = 0

    @property
    def averaged(self) -> torch.nn.Module:
        """The model to evaluate and save: the EMA copy when there is one, else the model."""
        return self.ema.model if self.ema else self.model

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.target is not None:
            with torch.no_grad():
                targets = self.target(inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        if self.use_amp:
            autocast = torch.autocast("cuda", dtype=torch.float16)
        elif self.use_amp_cpu:
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            autocast = contextlib.nullcontext()
        with autocast:
            loss = self.criterion(self.net(inputs).float(), targets)
        loss, terms = loss if isinstance(loss, tuple) else (loss, {})
        self.scaler.scale(loss).backward()
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model, self.step)
        self.step += 1
        value = loss.detach()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(value)
            value /= dist.get_world_size()
        return value, terms

    def state_dict(self) -> dict:
        return {"step": self.step, "model": self.model.state_dict(),
                "ema": self.ema.model.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]


def run_steps(step: TrainStep, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, total: int,
              desc: str, quiet: bool = False,
              after_step: Callable[[float, dict, torch.Tensor], dict | None] | None = None) -> list[float]:
    """Train with ``step`` on each ``(input, target)`` batch (moved to the model's device), showing a
    progress bar of ``total`` steps (starting at ``step.step``) unless ``quiet``. ``after_step(loss,
    terms, inputs)`` runs after every step (logging, validation, checkpoints) and may return more
    progress-bar fields. The model is left in train mode. Returns the per-step losses."""
    from tqdm import tqdm

    device = next(step.model.parameters()).device
    step.model.train()
    losses = []
    with tqdm(total=total, initial=step.step, desc=desc, unit="step", dynamic_ncols=True, disable=quiet) as bar:
        for inputs, targets in batches:
            inputs = inputs.to(device, non_blocking=True)
            loss, terms = step(inputs, targets.to(device, non_blocking=True))
            losses.append(float(loss))
            shown = after_step(losses[-1], terms, inputs) if after_step else None
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", **(shown or {}))
    return losses


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _atomic_torch_save(obj, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@torch.no_grad()
def validate(model: torch.nn.Module, evalset: EvalSet, device: torch.device) -> dict:
    """Mean PSNR/SSIM (RGB, outputs clipped to [0, 1]) of ``model`` on ``evalset``."""
    model.eval()
    config = model.config

    gray = config.in_channels == 1  # a gray model sees the frame's one channel, scored as RGB

    def infer(x: np.ndarray) -> np.ndarray:
        y = model(torch.from_numpy(x[:, :1] if gray else x).to(device)).float().cpu().numpy()
        return np.repeat(y, 3, axis=1) if gray else y

    result = score(lambda degraded: run_padded(infer, degraded, multiple=config.pad_multiple, scale=config.scale),
                   evalset)
    return {"val_psnr": result["psnr"], "val_ssim": result["ssim"], "val_n": result["n"]}


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, device: str | None = None,
                 max_steps: int | None = None, quiet: bool = False):
        self.cfg, self.quiet = cfg, quiet
        self.rank, self.world, local_rank = _dist_info()
        if device is None:
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.out = cfg.out_dir()
        self.stop_at = cfg.total_steps if max_steps is None else min(max_steps, cfg.total_steps)

        torch.manual_seed(cfg.seed)
        model_cfg = cfg.model_config()
        # what the init weights were made from (`mirnet prune`'s source and record) stays on record
        self.lineage: dict = {}
        # the weights the run started from and distilled from, by file and sha256 (a bundled name
        # in the config means whatever was shipped then)
        self.weights_used = {key: file_record(resolve_weights(name))
                             for key, name in (("init", cfg.init), ("teacher", cfg.teacher)) if name}
        if cfg.init:
            init_path = resolve_weights(cfg.init)
            if init_path.suffix == ".safetensors":  # official .pth checkpoints have no manifest
                init_manifest = read_manifest(init_path, kind="weights", verify=False)
                self.lineage = {key: init_manifest[key] for key in ("source", "prune") if init_manifest.get(key)}
            model = load_model(cfg.init)
            if model.config.replace(in_channels=1, out_channels=1, n_rrg=model_cfg.n_rrg) == model_cfg != \
                    model.config.replace(n_rrg=model_cfg.n_rrg):
                model = to_gray(model)  # a gray specialist starts as the colour model on gray frames
            if model.config.n_rrg < model_cfg.n_rrg and model.config == model_cfg.replace(n_rrg=model.config.n_rrg):
                model = deepen(model, model_cfg.n_rrg)
            if model.config != model_cfg:
                raise ConfigError(f"init weights {cfg.init} have config {model.config}, but the run asks "
                                  f"for {model_cfg}; drop `init` or match `variant`/`model` (only `n_rrg` "
                                  f"may grow, added groups starting as identities, and a colour model may "
                                  f"become a gray one with `in_channels: 1, out_channels: 1`)")
        else:
            model = create_model(model_cfg)
        self.model = model.to(self.device).train()
        net = None
        if self.world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        criterion, target = build_loss(cfg.loss).to(self.device), None
        if cfg.teacher:
            criterion, target = (DistillationLoss(cfg.teacher_weight, criterion),
                                 distillation_target(self._teacher(cfg.teacher)))
        self.train_step = TrainStep(
            self.model, criterion, target=target, lr=cfg.lr, periods=cfg.periods,
            restart_weights=cfg.restart_weights, eta_mins=cfg.eta_mins, warmup_steps=cfg.warmup_steps,
            betas=cfg.betas, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, ema_decay=cfg.ema_decay,
            amp=cfg.amp, amp_cpu=cfg.amp_cpu, channels_last=cfg.channels_last, net=net)
        self.best_psnr = -math.inf
        self.evalset = None
        if cfg.val is not None and self.rank == 0:
            v = cfg.val
            if v.clean:
                sets = [EvalSet.from_clean(v.clean, v.sigma, limit=v.limit, crop=v.crop, gray=v.gray)] if v.sigma is not None else []
                sets += [EvalSet.from_protocol(v.clean, p, limit=v.limit, crop=v.crop) for p in v.protocols]
                self.evalset = EvalSet.concat(sets)
            else:
                self.evalset = EvalSet.from_pairs(v.low, v.high, limit=v.limit, crop=v.crop, low_prefix=v.low_prefix,
                                                  high_prefix=v.high_prefix, holdout_every=v.holdout_every)
        if resume:
            self._load_checkpoint()
        elif (self.out / CHECKPOINT).exists():
            raise ConfigError(f"{self.out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                              f"it or choose another `out`/`name`")
        self._tb = None

    def _teacher(self, path: str) -> torch.nn.Module:
        """The frozen model to distil from; it must take and return the images the student does."""
        teacher = load_model(path).to(self.device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        t, s = teacher.config, self.model.config
        if (t.in_channels, t.out_channels, t.scale) != (s.in_channels, s.out_channels, s.scale):
            raise ConfigError(f"teacher {path} maps {t.in_channels} to {t.out_channels} channels at scale "
                              f"{t.scale}, the model {s.in_channels} to {s.out_channels} at scale {s.scale}; "
                              f"distil from a model of the same task")
        return teacher

    @property
    def step(self) -> int:
        return self.train_step.step

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {**self.train_step.state_dict(), "best_psnr": self.best_psnr, "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict()}

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(self._state(), self.out / CHECKPOINT)

    def _load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            raise ArtifactError(f"--resume: no checkpoint at {path}; start the run without --resume")
        fix = "delete it (or set another `out` in the config) and start the run again without --resume"
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:  # UnpicklingError for anything but tensors and containers; damaged files
            torch_advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
            reason = next((line.strip() for line in str(exc).splitlines()
                           if line.strip() and not line.strip().startswith(torch_advice)), type(exc).__name__)
            raise ArtifactError(
                f"--resume: {path} is not a checkpoint this trainer can read ({reason}); "
                f"it was refused without running any of its code (weights-only loading). If it is not "
                f"yours, {fix}") from None
        keys = {"config", "torch_rng", "best_psnr", *self.train_step.state_dict()}
        if not isinstance(state, dict) or not keys <= set(state) or not isinstance(state["config"], dict):
            raise ArtifactError(f"--resume: {path} is not a checkpoint written by `mirnet train` (it needs the "
                                f"keys {sorted(keys)}); {fix}")
        if state["config"] != self.cfg.to_dict():
            changed = sorted(k for k in state["config"] if state["config"][k] != self.cfg.to_dict().get(k))
            raise ConfigError(f"--resume: the config changed since the checkpoint (fields {changed}); "
                              f"resume with the original config or start a new run")
        try:
            self.train_step.load_state_dict(state)
            torch.set_rng_state(state["torch_rng"].cpu())
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise ArtifactError(f"--resume: {path} does not fit this run ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''}); {fix}") from None
        self.best_psnr = state["best_psnr"]

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is None and self.cfg.tensorboard:
            tb = require("torch.utils.tensorboard", "train")
            self._tb = tb.SummaryWriter(str(self.out / "tb"))
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["step"])

    def _validate(self) -> dict:
        result = validate(self.train_step.averaged, self.evalset, self.device)
        self.model.train()
        if result["val_psnr"] > self.best_psnr:
            self.best_psnr = result["val_psnr"]
            self.export(self.out / "best.safetensors", metrics=result)
        return result

    def export(self, path: Path, *, metrics: dict | None = None) -> Path:
        """Write the EMA (or raw) weights as safetensors + manifest with the training record."""
        model = copy.deepcopy(self.train_step.averaged).cpu().eval().to(memory_format=torch.contiguous_format)
        config = self.cfg.to_dict()
        # `data`: the sources with their degradations or camera model, what calibration and quality
        # gates synthesise the model's own inputs from
        training = {"name": self.cfg.name, "steps": self.step, "data": config["sources"], "config": config,
                    "world_size": self.world, "device": str(self.device), **self.weights_used}
        # `model:` overrides make another network than the named variant: no variant then
        variant = self.cfg.variant if self.cfg.model_config() == get_variant(self.cfg.variant) else None
        return save_weights(model, path, variant=variant, training=training, metrics=metrics or {}, **self.lineage)

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        cfg = self.cfg
        dataset = TrainSet(list(cfg.sources), seed=cfg.seed, channels=self.model.config.in_channels)
        sampler = StepBatchSampler(cfg.schedule, start_step=self.step, total_steps=self.stop_at,
                                   rank=self.rank, world_size=self.world)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            persistent_workers=cfg.workers > 0, pin_memory=self.device.type == "cuda")
        t0, last_val = time.perf_counter(), {}

        def after_step(loss: float, terms: dict, inputs: torch.Tensor) -> dict:
            nonlocal last_val
            if self.step % cfg.log_every == 0 or self.step == self.stop_at:
                self._log({"step": self.step, "lr": self.train_step.scheduler.get_last_lr()[0], "loss": loss, **terms,
                           "patch": int(inputs.shape[-1]), "batch": int(inputs.shape[0]) * self.world,
                           "seconds": round(time.perf_counter() - t0, 2)})
            if self.evalset is not None and (self.step % cfg.val.every == 0 or self.step == self.stop_at):
                last_val = self._validate()
                self._log({"step": self.step, **last_val})
            if self.step % cfg.checkpoint_every == 0 or self.step == self.stop_at:
                self.save_checkpoint()
            return {"psnr": f"{last_val['val_psnr']:.2f}"} if last_val else None

        try:
            run_steps(self.train_step, loader, total=self.stop_at, desc=cfg.name, quiet=self.quiet or self.rank != 0,
                      after_step=after_step)
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        final = self.out / f"{cfg.name}.safetensors"
        if self.rank == 0:
            self.export(final, metrics=last_val)
        if self.world > 1:
            dist.barrier()
        return final


def train(config_path: str | Path, *, resume: bool = False, max_steps: int | None = None,
          device: str | None = None, quiet: bool = False) -> Path:
    """Run (or resume) the training run described by a YAML file; returns the final weights path."""
    cfg = TrainConfig.load(config_path)
    trainer = Trainer(cfg, resume=resume, device=device, max_steps=max_steps, quiet=quiet)
    try:
        return trainer.fit()
    finally:
        if trainer.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
