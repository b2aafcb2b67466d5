"""Tests for mirnet.train.schedule: the MIRNet-v2 / BasicSR cosine-restart-cyclic LR."""
from __future__ import annotations

import copy
import io
import math
import warnings

import pytest

torch = pytest.importorskip("torch")

from mirnet.sdk.errors import ConfigError  # noqa: E402
from mirnet.train.schedule import CosineRestartCyclic, lr_at  # noqa: E402

# Official MIRNet-v2 LOL settings.
LOL = dict(periods=[46000, 104000], restart_weights=[1, 1], eta_mins=[3e-4, 1e-6])
BASE = 2e-4


def formula(step, base, periods, weights, etas):
    """Direct transcription of BasicSR's get_lr (cycle i covers (C_{i-1}, C_i])."""
    cum = [sum(periods[:i + 1]) for i in range(len(periods))]
    i = next(k for k, c in enumerate(cum) if step <= c)
    start = 0 if i == 0 else cum[i - 1]
    return etas[i] + weights[i] * 0.5 * (base - etas[i]) * (
        1 + math.cos(math.pi * (step - start) / periods[i]))


def test_lol_first_cycle_rises_from_base_to_eta_min():
    # eta_min 3e-4 > base lr 2e-4: the "annealing" runs upwards, 2e-4 -> 3e-4, it is NOT constant:
    # lr = 3e-4 + 0.5 * (2e-4 - 3e-4) * (1 + cos(pi t / 46000)) = 3e-4 - 0.5e-4 * (1 + cos(...)).
    assert lr_at(0, BASE, **LOL) == pytest.approx(2.0e-4, rel=1e-12, abs=0)
    assert lr_at(23000, BASE, **LOL) == pytest.approx(2.5e-4, rel=1e-12, abs=0)
    assert lr_at(46000, BASE, **LOL) == pytest.approx(3.0e-4, rel=1e-12, abs=0)
    assert lr_at(0, BASE, **LOL) < lr_at(11500, BASE, **LOL) < lr_at(23000, BASE, **LOL)


def test_lol_second_cycle_restarts_and_anneals_to_1e6():
    # Step 46001 is the first step of cycle 1: back to ~base lr (cos(pi/104000) ~ 1 - 4.6e-10).
    after_restart = 1e-6 + 0.5 * (2e-4 - 1e-6) * (1 + math.cos(math.pi / 104000))
    assert lr_at(46001, BASE, **LOL) == pytest.approx(after_restart, rel=1e-12, abs=0)
    assert lr_at(46001, BASE, **LOL) == pytest.approx(2e-4, rel=1e-8, abs=0)
    assert lr_at(46000 + 52000, BASE, **LOL) == pytest.approx(1.005e-4, rel=1e-12, abs=0)
    assert lr_at(150000, BASE, **LOL) == pytest.approx(1e-6, rel=1e-9, abs=0)
    # past the last cycle the final value is kept (BasicSR itself fails there)
    assert lr_at(200000, BASE, **LOL) == lr_at(150000, BASE, **LOL)


def test_equal_eta_min_and_base_lr_gives_constant_first_cycle():
    # Restormer-style settings (eta_min == base lr) are the ones that hold the LR constant.
    kw = dict(periods=[92000, 208000], restart_weights=[1, 1], eta_mins=[3e-4, 1e-6])
    assert {lr_at(s, 3e-4, **kw) for s in (0, 30000, 60000, 92000)} == {3e-4}


@pytest.mark.parametrize("step", [0, 1, 999, 45999, 46000, 46001, 46002, 100000, 149999, 150000])
def test_lr_at_matches_basicsr_formula(step):
    assert lr_at(step, BASE, **LOL) == pytest.approx(
        formula(step, BASE, LOL["periods"], LOL["restart_weights"], LOL["eta_mins"]),
        rel=1e-13, abs=0)


def test_restart_weight_scales_the_cycle():
    kw = dict(periods=[10, 10], restart_weights=[1.0, 0.5], eta_mins=[0.0, 0.0])
    assert lr_at(0, 1.0, **kw) == 1.0
    assert lr_at(10, 1.0, **kw) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(11, 1.0, **kw) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi / 10)))
    assert lr_at(15, 1.0, **kw) == pytest.approx(0.25)


def test_warmup_ramps_linearly_from_zero():
    kw = dict(periods=[100], restart_weights=[1], eta_mins=[0.0])
    assert lr_at(0, 1.0, **kw, warmup_steps=4) == 0.0
    assert lr_at(1, 1.0, **kw, warmup_steps=4) == pytest.approx(0.25 * lr_at(1, 1.0, **kw))
    assert lr_at(3, 1.0, **kw, warmup_steps=4) == pytest.approx(0.75 * lr_at(3, 1.0, **kw))
    assert lr_at(4, 1.0, **kw, warmup_steps=4) == lr_at(4, 1.0, **kw)
    assert lr_at(50, 1.0, **kw, warmup_steps=4) == lr_at(50, 1.0, **kw)


def test_validation_errors():
    with pytest.raises(ConfigError, match=r"same length.*2, 1 and 2"):
        lr_at(0, BASE, [1, 2], [1], [0, 0])
    with pytest.raises(ConfigError, match=r"periods=\[10, 0\].*\[0\]"):
        lr_at(0, BASE, [10, 0], [1, 1], [0, 0])
    with pytest.raises(ConfigError, match="periods=\\[\\]"):
        lr_at(0, BASE, [], [], [])
    with pytest.raises(ConfigError, match="eta_mins.*-1"):
        lr_at(0, BASE, [10], [1], [-1])
    with pytest.raises(ConfigError, match="step=-1"):
        lr_at(-1, BASE, [10], [1], [0])
    with pytest.raises(ConfigError, match="warmup_steps=-5"):
        lr_at(0, BASE, [10], [1], [0], warmup_steps=-5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="same length"):
        CosineRestartCyclic(opt, [1, 2], [1, 1], [0])


def _make(lr=BASE, **kw):
    p = torch.nn.Parameter(torch.zeros(2))
    q = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([{"params": [p]}, {"params": [q], "lr": lr / 2}], lr=lr)
    sched = CosineRestartCyclic(opt, **kw)
    return opt, sched, (p, q)


def _train_step(opt, sched, params):
    for prm in params:
        prm.grad = torch.ones_like(prm)
    opt.step()
    sched.step()
    return [g["lr"] for g in opt.param_groups]


SMALL = dict(periods=[5, 7], restart_weights=[1.0, 0.5], eta_mins=[1e-5, 1e-7], warmup_steps=3)


def test_scheduler_follows_lr_at_for_every_group():
    opt, sched, params = _make(**SMALL)
    assert [g["lr"] for g in opt.param_groups] == [lr_at(0, BASE, **SMALL), 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no "step order" warnings
        for step in range(1, 16):
            lrs = _train_step(opt, sched, params)
            assert lrs == [lr_at(step, BASE, **SMALL), lr_at(step, BASE / 2, **SMALL)]
            assert sched.get_last_lr() == lrs
    assert sched.total_steps == 12


def test_scheduler_state_dict_round_trip_resumes_exactly():
    opt, sched, params = _make(**SMALL)
    for _ in range(4):
        _train_step(opt, sched, params)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    saved_params = [prm.detach().clone() for prm in params]
    reference = [_train_step(opt, sched, params) for _ in range(12)]

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)   # the state dict holds plain Python values only
    opt2, sched2, params2 = _make(**SMALL)
    with torch.no_grad():
        for prm, saved in zip(params2, saved_params):
            prm.copy_(saved)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    assert sched2.last_epoch == 4
    resumed = [_train_step(opt2, sched2, params2) for _ in range(12)]
    assert resumed == reference
    assert all(torch.equal(a, b) for a, b in zip(params, params2))


def test_state_dict_overrides_constructor_schedule():
    opt, sched, params = _make(**SMALL)
    for _ in range(6):
        _train_step(opt, sched, params)
    state = copy.deepcopy(sched.state_dict())
    opt2, sched2, params2 = _make(periods=[100], restart_weights=[1], eta_mins=[0.0])
    sched2.load_state_dict(state)
    assert sched2.periods == [5, 7] and sched2.total_steps == 12
    assert _train_step(opt2, sched2, params2)[0] == lr_at(7, BASE, **SMALL)
