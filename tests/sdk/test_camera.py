"""The camera model: sensor noise that follows the signal, Bayer and monochrome sensors, real
4:2:0 encoders, determinism from the generator, the named evaluation presets."""
import numpy as np
import pytest
from imagekit import write_rgb

from mirnet.sdk import camera
from mirnet.sdk.camera import CameraConfig
from mirnet.sdk.errors import ConfigError
from mirnet.sdk.evalsets import EvalSet
from mirnet.sdk.metrics import psnr

pytest.importorskip("av")


def scene(h=32, w=48, seed=0):
    """A smooth colour image with some texture, in [0.05, 0.95]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx[..., None] / 5 + np.arange(3)) * np.cos(yy[..., None] / 7)
    return np.clip(base + rng.normal(0, 0.03, (h, w, 3)), 0.05, 0.95).astype(np.float32)


def raw_camera(**kw):
    """An uncompressed colour camera without Bayer or row noise, unless overridden."""
    return CameraConfig(**{"codecs": {"none": 1}, "bayer_prob": 0.0, "mono_prob": 0.0, "row_prob": 0.0,
                           "read_sigma": (0.0, 0.0), **kw})


def test_tone_curve_round_trips():
    x = np.linspace(0, 1, 1001, dtype=np.float32)
    np.testing.assert_allclose(camera.linear_to_srgb(camera.srgb_to_linear(x)), x, atol=1e-5)
    assert camera.srgb_to_linear(np.float32(0.5)) == pytest.approx(0.2140, abs=1e-4)


def test_bayer_mosaic_and_demosaic_recover_a_smooth_image():
    img = scene(64, 64)
    raw = camera.mosaic_rggb(img)
    assert raw[0, 0] == img[0, 0, 0] and raw[0, 1] == img[0, 1, 1] and raw[1, 1] == img[1, 1, 2]
    assert psnr(camera.demosaic_rggb(raw), img) > 30  # a wrong pattern gives about 12 dB


def test_shot_noise_grows_with_darkness_and_follows_the_signal():
    img = scene(64, 64)
    bright, _ = raw_camera(peak=(1000.0, 1000.0)).apply(img, np.random.default_rng(0))
    dark, _ = raw_camera(peak=(10.0, 10.0)).apply(img, np.random.default_rng(0))
    assert psnr(bright, img) > psnr(dark, img) + 10
    flat = np.full((64, 64, 3), 0.2, np.float32)
    flat[:, 32:] = 0.8
    noisy, _ = raw_camera(peak=(30.0, 30.0)).apply(flat, np.random.default_rng(1))
    # Poisson noise in linear light: brighter regions have more absolute noise before the tone curve
    # compresses it; what stays measurable is that the noise is signal-dependent
    assert abs(noisy[:, :32].std() - noisy[:, 32:].std()) > 0.005


def test_the_same_generator_state_gives_the_same_sample_and_codecs_work():
    img = scene()
    cfg = CameraConfig(codecs={"h264": 1, "jpeg": 1, "h265": 1, "none": 1}, pframe_prob=0.5)
    for seed in range(6):
        a = cfg.apply(img, np.random.default_rng([3, seed]))
        b = cfg.apply(img, np.random.default_rng([3, seed]))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[0].shape == img.shape and a[0].dtype == np.float32 and 0 <= a[0].min() and a[0].max() <= 1


def test_video_delivery_is_4_2_0_and_a_p_frame_differs_from_an_i_frame():
    img = scene(32, 32)
    u8 = np.round(img * 255).astype(np.uint8)
    single = camera.encode_video([u8], "h264", 10)
    assert single.shape == u8.shape and psnr(single / 255.0, img) > 30
    chroma_only = u8.copy()
    chroma_only[0::2, 0::2, 0] = 255  # red on one pixel in four: 4:2:0 averages it away
    decoded = camera.encode_video([chroma_only], "h264", 0)
    assert np.abs(decoded[0::2, 0::2, 0].astype(int) - 255).mean() > 20
    frames = [np.clip(u8.astype(int) + np.random.default_rng(i).integers(-20, 21, u8.shape), 0, 255).astype(np.uint8)
              for i in range(3)]
    assert not np.array_equal(camera.encode_video(frames, "h264", 30), camera.encode_video(frames[-1:], "h264", 30))


def test_monochrome_sensor_delivers_gray_and_targets_the_gray_scene():
    img = scene()
    for codec in ("none", "jpeg", "h264"):
        delivered, target = CameraConfig(mono_prob=1.0, codecs={codec: 1}).apply(img, np.random.default_rng(0))
        assert np.array_equal(delivered[..., 0], delivered[..., 1]) and np.array_equal(delivered[..., 1], delivered[..., 2])
        np.testing.assert_allclose(target[..., 0], camera.luma(img), atol=1e-6)


def test_exposure_darkens_without_auto_gain():
    img = scene()
    dark, target = raw_camera(exposure=(0.1, 0.1)).apply(img, np.random.default_rng(0))
    assert dark.mean() < 0.5 * img.mean() and np.array_equal(target, img)


@pytest.mark.parametrize("bad", [{"peak": (0, 10)}, {"mono_prob": 2}, {"codecs": {"mpeg2": 1}},
                                 {"codecs": {"jpeg": 0}}, {"crf": (10, 60)}, {"clip_frames": 1},
                                 {"jpeg_quality": (50.5, 90)}])
def test_bad_camera_settings_name_the_field(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        CameraConfig(**bad)


def test_odd_sizes_are_refused_and_unknown_keys_listed():
    with pytest.raises(ConfigError, match="even H and W"):
        CameraConfig().apply(np.zeros((31, 32, 3), np.float32), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="unknown camera key"):
        CameraConfig.from_dict({"iso": 800})
    assert CameraConfig.from_dict(CameraConfig().to_dict()) == CameraConfig()


def test_presets_are_seeded_per_image(tmp_path):
    for i in range(2):
        write_rgb(tmp_path / f"{i}.png", (scene(40, 50, seed=i) * 255).astype(np.uint8))
    with pytest.raises(ConfigError, match="camera-h264"):
        EvalSet.from_protocol(tmp_path, "camera-hevc")
    a = EvalSet.from_protocol(tmp_path, "camera-mono")
    b = EvalSet.from_protocol(tmp_path, "camera-mono")
    assert len(a) == 2 and all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert np.array_equal(a[0][1][..., 0], a[0][1][..., 2])  # gray targets
    assert not np.array_equal(EvalSet.from_protocol(tmp_path, "camera-jpeg", seed=1)[0][0],
                              EvalSet.from_protocol(tmp_path, "camera-jpeg")[0][0])
