"""Bad training configs and untrusted checkpoints: ConfigError naming the key (exit 2), ArtifactError
naming the file and the fix (exit 4), never a traceback; a malicious ``last.pt`` never runs code."""
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from mirnet.sdk.cli import main
from mirnet.sdk.errors import ArtifactError, ConfigError
from mirnet.train.config import TrainConfig
from mirnet.train.loop import Trainer


def _config(tmp_path: Path, **overrides) -> dict:
    clean = tmp_path / "clean"
    clean.mkdir(exist_ok=True)
    for i in range(2):
        cv2.imwrite(str(clean / f"{i}.png"), np.full((40, 48, 3), 60 * i, np.uint8))
    data = {"name": "t", "variant": "nano", "sources": [{"clean": str(clean)}], "iters": [2], "patch": [16],
            "batch": [1], "workers": 0, "out": str(tmp_path / "run")}
    data.update(overrides)
    return data


BAD = {
    "model-string": ({"model": "hello"}, "`model`='hello' must be a mapping"),
    "model-unknown-field": ({"model": {"depth": 3}}, "`model` overrides unknown fields ['depth']"),
    "model-bad-value": ({"model": {"n_feat": "wide"}}, "n_feat"),
    "lr-string": ({"lr": "fast"}, "`lr`='fast' must be a number > 0"),
    "lr-nan": ({"lr": float("nan")}, "`lr`=nan must be a number > 0"),
    "seed-string": ({"seed": "abc"}, "`seed`='abc' must be an integer"),
    "seed-negative": ({"seed": -1}, "`seed`=-1 must be an integer from 0"),
    "checkpoint_every-zero": ({"checkpoint_every": 0}, "`checkpoint_every`=0 must be an integer >= 1"),
    "log_every-float": ({"log_every": 2.5}, "`log_every`=2.5 must be an integer >= 1"),
    "amp-string": ({"amp": "yes"}, "`amp`='yes' must be true or false"),
    "betas-one": ({"betas": [0.9]}, "`betas`=(0.9,) must be a list of 2 numbers in [0, 1)"),
    "ema_decay-one": ({"ema_decay": 1.0}, "`ema_decay`=1.0 must be a number in [0, 1)"),
    "threads-zero": ({"threads": 0}, "`threads`=0 must be an integer >= 1 (or null)"),
    "name-number": ({"name": 5}, "`name`=5 must be a string"),
    "iters-string": ({"iters": "many"}, "`iters`='many' must be a list of integers"),
    "val-every-zero": ({"val": {"clean": "x", "sigma": 25, "every": 0}}, "val: `every`=0 must be an integer >= 1"),
    "val-limit-string": ({"val": {"clean": "x", "sigma": 25, "limit": "all"}}, "val: `limit`='all'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_the_key(tmp_path, case, capsys):
    overrides, message = BAD[case]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, **overrides)))
    with pytest.raises(ConfigError) as err:
        TrainConfig.load(path)
    assert message in str(err.value)
    assert main(["train", "--config", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["pickle-payload", "torch-save-payload", "garbage", "wrong-structure"])
def test_resume_refuses_an_untrusted_checkpoint(tmp_path, kind, capsys):
    cfg = TrainConfig.from_dict(_config(tmp_path))
    run = tmp_path / "run"
    run.mkdir()
    last, marker = run / "last.pt", tmp_path / "pwned"
    if kind == "pickle-payload":
        last.write_bytes(pickle.dumps({"config": _Payload(marker)}))
    elif kind == "torch-save-payload":
        torch.save({"config": _Payload(marker)}, last)
    elif kind == "garbage":
        last.write_bytes(b"\x00not a checkpoint")
    else:
        torch.save({"step": torch.tensor(3)}, last)
    with pytest.raises(ArtifactError) as err:
        Trainer(cfg, quiet=True, resume=True)
    text = str(err.value)
    assert str(last) in text and "without --resume" in text
    assert not marker.exists()
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path)))
    assert main(["train", "--config", str(path), "--resume", "-q"]) == 4
    err = capsys.readouterr().err
    assert str(last) in err and "Traceback" not in err and "weights_only` set to `False`" not in err
    assert not marker.exists()
