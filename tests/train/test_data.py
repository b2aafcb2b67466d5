"""Training data: progressive schedule, deterministic keyed samples, rank-disjoint batch sampling,
worker-independent loading, and the hold-out split shared with evaluation."""
import numpy as np
import pytest
import torch
from imagekit import make_pairs, rand_u8, write_rgb
from torch.utils.data import DataLoader

from mirnet.sdk.degrade import DegradeConfig
from mirnet.sdk.errors import ConfigError, InputError
from mirnet.sdk.evalsets import EvalSet, split_holdout
from mirnet.train.data import ProgressiveSchedule, SourceConfig, StepBatchSampler, TrainSet


@pytest.fixture
def clean_dir(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 56), (48, 48), (24, 32)]):
        write_rgb(tmp_path / "clean" / f"img{i}.png", rand_u8(rng, h, w))
    return tmp_path / "clean"


@pytest.fixture
def paired_dirs(tmp_path):
    return make_pairs(tmp_path)


# -- schedule -----------------------------------------------------------------------------------

def test_progressive_schedule_boundaries():
    s = ProgressiveSchedule(iters=[3, 2, 4], patch=[16, 24, 32], batch=[8, 4, 2])
    assert s.total == 9
    assert [s.at(i) for i in range(11)] == [(16, 8)] * 3 + [(24, 4)] * 2 + [(32, 2)] * 6
    assert s.stage(2) == 0 and s.stage(3) == 1 and s.stage(100) == 2
    assert ProgressiveSchedule.from_dict({"iters": [3, 2, 4], "patch": [16, 24, 32], "batch": [8, 4, 2]}) == s


@pytest.mark.parametrize("kw, match", [
    (dict(iters=[1, 2], patch=[8], batch=[1, 1]), r"one entry per stage.*'patch': 1.*same length"),
    (dict(iters=[], patch=[], batch=[]), r"non-empty"),
    (dict(iters=[1, 0], patch=[8, 8], batch=[1, 1]), r"iters.*0 is not a positive integer"),
    (dict(iters=[1], patch=[8.5], batch=[1]), r"patch"),
])
def test_progressive_schedule_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        ProgressiveSchedule(**kw)
    with pytest.raises(ConfigError, match=r"unknown \['patches'\].*missing \['patch'\]"):
        ProgressiveSchedule.from_dict({"iters": [1], "patches": [8], "batch": [1]})


# -- sources and TrainSet -----------------------------------------------------------------------

def test_source_config_validation(tmp_path):
    s = SourceConfig.from_dict({"clean": "c", "weight": 2, "degrade": {"awgn_sigma": [0, 50]}}, root=tmp_path)
    assert s.clean == str(tmp_path / "c") and s.degrade.awgn_sigma == (0.0, 50.0) and not s.paired
    with pytest.raises(ConfigError, match=r"unknown source key\(s\) \['folder'\].*clean"):
        SourceConfig.from_dict({"folder": "x"})
    with pytest.raises(ConfigError, match="not both"):
        SourceConfig(clean="a", low="b", high="c")
    with pytest.raises(ConfigError, match="both low: and high:"):
        SourceConfig(low="b")
    with pytest.raises(ConfigError, match="weight=0"):
        SourceConfig(clean="a", weight=0)
    with pytest.raises(ConfigError, match="paired source but sets degrade"):
        SourceConfig.from_dict({"low": "a", "high": "b", "degrade": {"awgn_sigma": [25, 25]}})


def make_trainset(clean_dir, paired_dirs, seed=0):
    low, high = paired_dirs
    return TrainSet([
        SourceConfig(clean=str(clean_dir), weight=1.0, degrade=DegradeConfig(awgn_sigma=(10, 30))),
        SourceConfig(low=str(low), high=str(high), weight=1.0),
    ], seed=seed)


def test_trainset_deterministic(clean_dir, paired_dirs):
    ds = make_trainset(clean_dir, paired_dirs)
    a_in, a_tgt = ds[(5, 1, 16)]
    b_in, b_tgt = make_trainset(clean_dir, paired_dirs)[(5, 1, 16)]  # fresh cache, same seed
    assert a_in.dtype == torch.float32 and a_in.shape == (3, 16, 16) == a_tgt.shape
    assert torch.equal(a_in, b_in) and torch.equal(a_tgt, b_tgt)
    assert torch.equal(ds[(5, 1, 16)][0], a_in)  # cached path gives the same
    for other in [(5, 2, 16), (6, 1, 16)]:
        assert not torch.equal(ds[other][1], a_tgt) or not torch.equal(ds[other][0], a_in)
    c_in, _ = make_trainset(clean_dir, paired_dirs, seed=1)[(5, 1, 16)]
    assert not torch.equal(c_in, a_in)
    with pytest.raises(InputError, match="StepBatchSampler"):
        ds[3]


def test_trainset_patch_larger_than_image(clean_dir, paired_dirs):
    ds = make_trainset(clean_dir, paired_dirs)
    for j in range(12):
        inp, tgt = ds[(0, j, 72)]  # every image is smaller than 72 in at least one side
        assert inp.shape == tgt.shape == (3, 72, 72)
        assert torch.isfinite(inp).all() and 0 <= tgt.min() and tgt.max() <= 1


def test_trainset_uses_both_sources_and_weights(clean_dir, paired_dirs):
    low, high = paired_dirs
    ds = TrainSet([SourceConfig(clean=str(clean_dir), weight=3.0),
                   SourceConfig(low=str(low), high=str(high), weight=1.0)], seed=0)
    # a clean source with the default (identity) degrade returns input == target
    same = sum(torch.equal(*ds[(s, 0, 8)]) for s in range(400))
    assert 240 < same < 360  # ~ 3/4


def test_paired_geometry_identical_on_input_and_target(paired_dirs):
    low, high = paired_dirs
    ds = TrainSet([SourceConfig(low=str(low), high=str(high))], seed=3)
    for step in range(24):
        for patch in (16, 64):
            inp, tgt = ds[(step, 0, patch)]
            assert torch.allclose(inp * 2, tgt, atol=1e-6)
            assert tgt.std() > 0.1  # real content, not padding of zeros


def test_trainset_augmentation_covers_flips_and_rotations(tmp_path):
    img = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    write_rgb(tmp_path / "one" / "a.png", img)
    ds = TrainSet([SourceConfig(clean=str(tmp_path / "one"))], seed=0)
    variants = {ds[(s, 0, 8)][1].numpy().tobytes() for s in range(64)}
    assert len(variants) == 8  # full image crop: only the 8 dihedral transforms differ


def test_step_batch_sampler_ranks_disjoint_and_cover():
    sched = ProgressiveSchedule(iters=[2, 3], patch=[16, 32], batch=[3, 2])
    s0 = StepBatchSampler(sched, rank=0, world_size=2)
    s1 = StepBatchSampler(sched, rank=1, world_size=2)
    b0, b1 = list(s0), list(s1)
    assert len(s0) == len(b0) == 5 == len(b1)
    for step, (k0, k1) in enumerate(zip(b0, b1)):
        patch, b = sched.at(step)
        assert len(k0) == len(k1) == b
        assert not set(k0) & set(k1)
        assert sorted(k0 + k1) == [(step, j, patch) for j in range(2 * b)]
    resumed = list(StepBatchSampler(sched, rank=1, world_size=2, start_step=3))
    assert resumed == b1[3:] and len(StepBatchSampler(sched, start_step=7)) == 0
    assert len(list(StepBatchSampler(sched, total_steps=7))) == 7
    with pytest.raises(ConfigError, match=r"rank=2 must be < world_size=2"):
        StepBatchSampler(sched, rank=2, world_size=2)


def test_dataloader_workers_do_not_change_batches(clean_dir, paired_dirs):
    ds = make_trainset(clean_dir, paired_dirs)
    sched = ProgressiveSchedule(iters=[2, 2], patch=[16, 24], batch=[3, 2])

    def batches(workers):
        sampler = StepBatchSampler(sched, rank=0, world_size=1)
        return list(DataLoader(ds, batch_sampler=sampler, num_workers=workers))

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) == 4
    assert serial[0][0].shape == (3, 3, 16, 16) and serial[3][1].shape == (2, 3, 24, 24)
    for (a_in, a_tgt), (b_in, b_tgt) in zip(serial, parallel):
        assert torch.equal(a_in, b_in) and torch.equal(a_tgt, b_tgt)


def test_trainset_pickles_without_cache(clean_dir, paired_dirs):
    import pickle

    ds = make_trainset(clean_dir, paired_dirs)
    first = ds[(0, 0, 16)]
    assert ds._cache
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._cache == {}
    assert all(torch.equal(a, b) for a, b in zip(clone[(0, 0, 16)], first))


def test_prefixes_apply_only_to_paired_sources():
    with pytest.raises(ConfigError, match="applies only to paired"):
        SourceConfig(clean="c", low_prefix="NOISY_")


def test_holdout_split_is_disjoint_and_shared_by_train_and_eval(tmp_path):
    train, held = split_holdout(list(range(100)), 10)
    assert held == list(range(9, 100, 10)) and len(train) == 90 and not set(train) & set(held)
    assert split_holdout([1, 2], 0) == ([1, 2], [])
    with pytest.raises(ConfigError, match="holdout_every=1"):
        split_holdout([], 1)
    rng = np.random.default_rng(0)
    for i in range(6):
        img = rand_u8(rng, 16, 16)
        write_rgb(tmp_path / "low" / f"{i}.png", img // 2)
        write_rgb(tmp_path / "high" / f"{i}.png", img)
    src = SourceConfig(low=str(tmp_path / "low"), high=str(tmp_path / "high"), holdout_every=3)
    ds = TrainSet([src], seed=0)
    assert [p[1].name for p in ds.items[0]] == ["0.png", "1.png", "3.png", "4.png"]
    ev = EvalSet.from_pairs(tmp_path / "low", tmp_path / "high", holdout_every=3)
    assert ev.names == ["2.png", "5.png"]


def test_camera_source_makes_pairs_and_gray_targets(tmp_path):
    pytest.importorskip("av")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_rgb(tmp_path / "c" / f"{i}.png", rand_u8(rng, 64, 80))
    mono = SourceConfig(clean=str(tmp_path / "c"), camera={"mono_prob": 1.0, "codecs": {"jpeg": 1}})
    inp, tgt = TrainSet([mono], seed=0)[(0, 0, 32)]
    assert torch.equal(inp[0], inp[1]) and torch.equal(tgt[0], tgt[2])  # gray in, gray target
    half = SourceConfig(clean=str(tmp_path / "c"), camera={}, downscale=0.5)
    ds = TrainSet([half], seed=0)
    ds[(0, 0, 16)]
    assert {img.shape for img in ds._cache.values()} == {(32, 40, 3)}
    with pytest.raises(ConfigError, match="camera applies to clean"):
        SourceConfig(clean="c", camera={}, degrade={"awgn_sigma": [0, 50]})
    with pytest.raises(ConfigError, match="downscale"):
        SourceConfig(clean="c", downscale=2)


def test_gray_share_of_a_degrade_source(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_rgb(tmp_path / "c" / f"{i}.png", rand_u8(rng, 48, 64))
    gray = SourceConfig(clean=str(tmp_path / "c"), degrade={"awgn_sigma": [25, 25]}, gray_prob=1.0)
    inp, tgt = TrainSet([gray], seed=0)[(0, 0, 32)]
    assert torch.equal(tgt[0], tgt[1]) and torch.equal(inp[0], inp[2])  # one channel of noise, gray target
    assert abs(float((inp - tgt).std()) - 25 / 255) < 0.015
    colour = SourceConfig(clean=str(tmp_path / "c"), degrade={"awgn_sigma": [25, 25]})
    inp, tgt = TrainSet([colour], seed=0)[(0, 0, 32)]
    assert not torch.equal(inp[0], inp[1])
    for bad, match in ((dict(gray_prob=1.5), "gray_prob=1.5 must be a probability"),
                       (dict(camera={}, gray_prob=0.5), "camera: {mono_prob"),
                       (dict(low="l", high="h", clean=None, gray_prob=0.5), "applies to clean")):
        with pytest.raises(ConfigError, match=match):
            SourceConfig(**{"clean": "c", **bad})


def test_sources_for_the_models_inputs(tmp_path, paired_dirs):
    from mirnet.sdk.mixture import model_inputs
    from mirnet.train.data import sources_for

    rng = np.random.default_rng(0)
    write_rgb(tmp_path / "c" / "0.png", rand_u8(rng, 48, 64))
    manifest = {"training": {"data": [
        {"clean": "far/away", "weight": 2.0, "degrade": {"awgn_sigma": [0, 50]}, "gray_prob": 0.25},
        {"clean": "far/away", "weight": 1.0, "camera": {"mono_prob": 0.5}},
        {"low": "x", "high": "y"}]}}
    mixed = sources_for(model_inputs(manifest), tmp_path / "c")
    assert [(s.clean, s.weight, s.gray_prob, s.camera is not None) for s in mixed] == [
        (str(tmp_path / "c"), 2.0, 0.25, False), (str(tmp_path / "c"), 1.0, 0.0, True)]
    assert mixed[0].degrade.awgn_sigma == (0.0, 50.0) and mixed[1].camera.mono_prob == 0.5
    (awgn,) = sources_for(model_inputs(None, sigma=15), tmp_path / "c")
    assert awgn.degrade.awgn_sigma == (15.0, 15.0) and awgn.degrade.clip
    (cam,) = sources_for(model_inputs(None, protocol="camera-h264"), tmp_path / "c")
    assert cam.camera.codecs == {"h264": 1.0}
    (pair,) = sources_for(model_inputs(None, pairs=str(paired_dirs[0].parent)), None)
    assert pair.paired
    with pytest.raises(ConfigError, match="not a folder of clean images"):
        sources_for(model_inputs(None, sigma=15), tmp_path / "missing")
