"""The training loop: AdamW, cosine-with-restarts LR, gradient clipping, EMA, AMP on GPU, atomic
checkpoints, exact resume, DDP through torchrun, progress bar and JSONL metrics.

Exact resume: the data of step ``s`` is a pure function of ``(seed, s)`` (see ``data.TrainSet``),
and the checkpoint holds the model, EMA, optimizer, LR scheduler, AMP scaler and step, so a run
killed and resumed from its last checkpoint continues as if it had never stopped.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from mirnet.sdk.artifact import atomic_write_bytes
from mirnet.sdk.errors import ArtifactError, ConfigError, require
from mirnet.sdk.model import create_model, load_model, save_weights

from .config import TrainConfig
from .data import EvalSet, StepBatchSampler, TrainSet
from .losses import build_loss
from .metrics import psnr, ssim
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
    m = model.config.pad_multiple
    scores_p, scores_s = [], []
    for degraded, clean in evalset:
        h, w = degraded.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(degraded.transpose(2, 0, 1)))[None].to(device)
        x = torch.nn.functional.pad(x, (0, -w % m, 0, -h % m), mode="reflect")
        y = model(x)[0, :, :h, :w].clamp(0, 1).permute(1, 2, 0).float().cpu().numpy()
        scores_p.append(psnr(y, clean))
        scores_s.append(ssim(y, clean))
    return {"val_psnr": float(np.mean(scores_p)), "val_ssim": float(np.mean(scores_s)), "val_n": len(scores_p)}


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
        if cfg.init:
            model = load_model(cfg.init)
            if model.config != model_cfg:
                raise ConfigError(f"init weights {cfg.init} have config {model.config}, but the run asks "
                                  f"for {model_cfg}; drop `init` or match `variant`/`model`")
        else:
            model = create_model(model_cfg)
        self.model = model.to(self.device).train()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.criterion = build_loss(cfg.loss).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                           weight_decay=cfg.weight_decay)
        self.scheduler = CosineRestartCyclic(self.optimizer, cfg.periods, cfg.restart_weights, cfg.eta_mins,
                                             warmup_steps=cfg.warmup_steps)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.best_psnr = -math.inf
        self.evalset = None
        if cfg.val is not None and self.rank == 0:
            v = cfg.val
            self.evalset = (EvalSet.from_clean(v.clean, v.sigma, limit=v.limit, crop=v.crop) if v.clean
                            else EvalSet.from_pairs(v.low, v.high, limit=v.limit, crop=v.crop,
                                                    low_prefix=v.low_prefix, high_prefix=v.high_prefix,
                                                    holdout_every=v.holdout_every))
        if resume:
            self._load_checkpoint()
        elif (self.out / CHECKPOINT).exists():
            raise ConfigError(f"{self.out} already holds a run ({CHECKPOINT}); pass --resume to continue "
                              f"it or choose another `out`/`name`")
        self._tb = None

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "step": self.step, "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best_psnr": self.best_psnr,
            "torch_rng": torch.get_rng_state(), "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(self._state(), self.out / CHECKPOINT)

    def _load_checkpoint(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            raise ArtifactError(f"--resume: no checkpoint at {path}; start the run without --resume")
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state["config"] != self.cfg.to_dict():
            changed = sorted(k for k in state["config"] if state["config"][k] != self.cfg.to_dict().get(k))
            raise ConfigError(f"--resume: the config changed since the checkpoint (fields {changed}); "
                              f"resume with the original config or start a new run")
        self.model.load_state_dict(state["model"])
        if self.ema:
            self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step, self.best_psnr = state["step"], state["best_psnr"]

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

    def _eval_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema else self.model

    def _validate(self) -> dict:
        result = validate(self._eval_model(), self.evalset, self.device)
        self.model.train()
        if result["val_psnr"] > self.best_psnr:
            self.best_psnr = result["val_psnr"]
            self.export(self.out / "best.safetensors", metrics=result)
        return result

    def export(self, path: Path, *, metrics: dict | None = None) -> Path:
        """Write the EMA (or raw) weights as safetensors + manifest with the training record."""
        model = copy.deepcopy(self._eval_model()).cpu().eval()
        training = {"name": self.cfg.name, "steps": self.step, "config": self.cfg.to_dict(),
                    "world_size": self.world, "device": str(self.device)}
        return save_weights(model, path, variant=self.cfg.variant, training=training, metrics=metrics or {})

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        cfg = self.cfg
        dataset = TrainSet(list(cfg.sources), seed=cfg.seed)
        sampler = StepBatchSampler(cfg.schedule, start_step=self.step, total_steps=self.stop_at,
                                   rank=self.rank, world_size=self.world)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                            persistent_workers=cfg.workers > 0, pin_memory=self.device.type == "cuda")
        from tqdm import tqdm

        bar = tqdm(total=self.stop_at, initial=self.step, desc=cfg.name, unit="step", dynamic_ncols=True,
                   disable=self.quiet or self.rank != 0)
        t0, last_val = time.perf_counter(), {}
        try:
            for inputs, targets in loader:
                loss, terms = self._train_step(inputs.to(self.device, non_blocking=True),
                                               targets.to(self.device, non_blocking=True))
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == self.stop_at:
                    record = {"step": self.step, "lr": self.scheduler.get_last_lr()[0], "loss": loss, **terms,
                              "patch": int(inputs.shape[-1]), "batch": int(inputs.shape[0]) * self.world,
                              "seconds": round(time.perf_counter() - t0, 2)}
                    self._log(record)
                if self.evalset is not None and (self.step % cfg.val.every == 0 or self.step == self.stop_at):
                    last_val = self._validate()
                    self._log({"step": self.step, **last_val})
                bar.set_postfix(loss=f"{loss:.4f}", **({"psnr": f"{last_val['val_psnr']:.2f}"} if last_val else {}))
                if self.step % cfg.checkpoint_every == 0 or self.step == self.stop_at:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            bar.close()
        final = self.out / f"{cfg.name}.safetensors"
        if self.rank == 0:
            self.export(final, metrics=last_val)
        if self.world > 1:
            dist.barrier()
        return final

    def _train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, dict]:
        self.optimizer.zero_grad(set_to_none=True)
        autocast = (torch.autocast("cuda", dtype=torch.float16) if self.use_amp else contextlib.nullcontext())
        with autocast:
            pred = self.net(inputs)
            loss, terms = self.criterion(pred.float(), targets)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema:
            self.ema.update(self.model, self.step)
        value = loss.detach()
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        return float(value), terms


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
