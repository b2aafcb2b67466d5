"""Torch-free evaluation data: image listing and reading (one reader, one suffix list), paired
folders, pair detection and the AWGN evaluation protocol."""
import cv2
import numpy as np
import pytest
from imagekit import make_pairs, rand_u8, write_rgb

from mirnet.sdk.errors import ConfigError, InputError
from mirnet.sdk.evalsets import EvalSet, detect_pairs, find_pairs, pair_folders
from mirnet.sdk.media import IMAGE_SUFFIXES, list_images, load_rgb


@pytest.fixture
def paired_dirs(tmp_path):
    return make_pairs(tmp_path)


# -- files --------------------------------------------------------------------------------------

def test_list_images_and_load_rgb(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"no image file.*\.png"):
        list_images(tmp_path / "empty")

    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    write_rgb(tmp_path / "d" / "b.png", rgb)
    cv2.imwrite(str(tmp_path / "d" / "a.png"), np.full((5, 7), 128, np.uint8))  # gray
    cv2.imwrite(str(tmp_path / "d" / "c.png"), np.full((5, 7, 3), 65535, np.uint16))  # 16-bit
    files = list_images(tmp_path / "d")
    assert [p.name for p in files] == ["a.png", "b.png", "c.png"]
    gray, red, white16 = (load_rgb(p) for p in files)
    assert gray.shape == (5, 7, 3) and gray.dtype == np.float32
    assert np.allclose(gray, 128 / 255)
    assert np.allclose(red[..., 0], 1) and np.allclose(red[..., 1:], 0)
    assert np.allclose(white16, 1.0)
    with pytest.raises(InputError, match="missing.png"):
        load_rgb(tmp_path / "missing.png")


def test_pair_folders_by_name(paired_dirs, tmp_path):
    low, high = paired_dirs
    pairs = pair_folders(low, high)
    assert [(a.name, b.name) for a, b in pairs] == [("p0.png", "p0.png"), ("p1.png", "p1.png")]
    assert all(a.parent == low and b.parent == high for a, b in pairs)

    rng = np.random.default_rng(0)
    write_rgb(low / "only_low.png", rand_u8(rng, 8, 8))
    write_rgb(high / "p0.jpg", rand_u8(rng, 8, 8))  # same stem, other suffix: not a match
    with pytest.raises(ConfigError) as e:
        pair_folders(low, high)
    msg = str(e.value)
    assert "only_low.png" in msg and "p0.jpg" in msg and "only in low" in msg and "only in high" in msg


def test_pair_folders_lists_at_most_five(tmp_path):
    rng = np.random.default_rng(0)
    write_rgb(tmp_path / "high" / "x.png", rand_u8(rng, 8, 8))
    for i in range(8):
        write_rgb(tmp_path / "low" / f"l{i}.png", rand_u8(rng, 8, 8))
    with pytest.raises(ConfigError, match=r"8 file\(s\) only in low.*and 3 more.*1 file\(s\) only in high"):
        pair_folders(tmp_path / "low", tmp_path / "high")


def test_pair_folders_with_prefixes(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        write_rgb(tmp_path / "NOISY" / f"NOISY_{i}.png", rand_u8(rng, 8, 8))
        write_rgb(tmp_path / "GT" / f"GT_{i}.png", rand_u8(rng, 8, 8))
    with pytest.raises(ConfigError, match=r"low_prefix='NOISY_', high_prefix='GT_'"):
        pair_folders(tmp_path / "NOISY", tmp_path / "GT")
    pairs = pair_folders(tmp_path / "NOISY", tmp_path / "GT", low_prefix="NOISY_", high_prefix="GT_")
    assert [(a.name, b.name) for a, b in pairs] == [("NOISY_0.png", "GT_0.png"), ("NOISY_1.png", "GT_1.png")]
    write_rgb(tmp_path / "GT" / "other.png", rand_u8(rng, 8, 8))
    with pytest.raises(ConfigError, match=r"after stripping.*only in high.*other.png"):
        pair_folders(tmp_path / "NOISY", tmp_path / "GT", low_prefix="NOISY_", high_prefix="GT_")


# -- EvalSet ------------------------------------------------------------------------------------

def test_evalset_awgn_protocol(tmp_path):
    rng = np.random.default_rng(0)
    write_rgb(tmp_path / "c" / "a.png", rand_u8(rng, 32, 40))
    write_rgb(tmp_path / "c" / "b.png", rand_u8(rng, 32, 40, 250, 256))  # near white
    write_rgb(tmp_path / "c" / "c.png", rand_u8(rng, 20, 20))
    ev = EvalSet.from_clean(tmp_path / "c", 25)
    assert len(ev) == 3 and ev.names == ["a.png", "b.png", "c.png"]
    (n0, c0), (n1, c1) = ev[0], ev[1]
    assert n0.dtype == c0.dtype == np.float32 and n0.shape == c0.shape == (32, 40, 3)
    assert np.allclose(n0 - c0, n1 - c1, atol=1e-6)  # RNG reset per image
    expected = np.random.RandomState(0).normal(0, 25 / 255, (32, 40, 3))
    assert np.allclose(n0 - c0, expected, atol=1e-6)
    assert n1.max() > 1.0 and n0.min() < 0.0  # not clipped

    clipped = EvalSet.from_clean(tmp_path / "c", 25, clip=True, limit=2)
    assert len(clipped) == 2
    n = clipped[1][0]
    assert n.min() >= 0 and n.max() <= 1 and np.allclose(n * 255, np.round(n * 255), atol=1e-4)

    cropped = EvalSet.from_clean(tmp_path / "c", 25, crop=16)
    assert [p[0].shape for p in cropped] == [(16, 16, 3)] * 3
    assert np.array_equal(cropped[0][1], c0[8:24, 12:28])
    with pytest.raises(ConfigError, match="crop=12 must be None.*multiple of 8"):
        EvalSet.from_clean(tmp_path / "c", 25, crop=12)
    with pytest.raises(ConfigError, match="sigma=-1"):
        EvalSet.from_clean(tmp_path / "c", -1)


def test_evalset_from_pairs(paired_dirs):
    low, high = paired_dirs
    ev = EvalSet.from_pairs(low, high, crop=16)
    assert len(ev) == 2 and ev.names == ["p0.png", "p1.png"]
    for lo, hi in ev:
        assert lo.shape == hi.shape == (16, 16, 3)
        assert np.allclose(lo * 2, hi, atol=1e-6)
    assert len(EvalSet.from_pairs(low, high, limit=1)) == 1


def test_one_suffix_list_covers_what_opencv_reads_for_us():
    for suffix in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm"):
        assert suffix in IMAGE_SUFFIXES


def test_list_images_skips_hidden_and_non_images(tmp_path):
    write_rgb(tmp_path / "b.PNG", np.zeros((4, 4, 3), np.uint8))
    write_rgb(tmp_path / ".hidden.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["b.PNG"]


def test_load_rgb_alpha_is_dropped_and_channels_are_rgb(tmp_path):
    bgra = np.zeros((3, 5, 4), np.uint8)
    bgra[..., 2] = 255  # red in OpenCV's BGR(A) order
    bgra[..., 3] = 7
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    rgb = load_rgb(tmp_path / "a.png")
    assert rgb.shape == (3, 5, 3) and np.all(rgb[..., 0] == 1) and np.all(rgb[..., 1:] == 0)


def test_detect_pairs_finds_layouts_and_sidd_prefixes(tmp_path):
    assert detect_pairs(tmp_path) is None
    with pytest.raises(ConfigError, match="low/high"):
        find_pairs(tmp_path)
    img = np.zeros((8, 8, 3), np.uint8)
    write_rgb(tmp_path / "NOISY" / "NOISY_0.png", img)
    write_rgb(tmp_path / "GT" / "GT_0.png", img)
    low, high, low_prefix, high_prefix = find_pairs(tmp_path)
    assert (low.name, high.name, low_prefix, high_prefix) == ("NOISY", "GT", "NOISY_", "GT_")
    ev = EvalSet.from_pairs(low, high, low_prefix=low_prefix, high_prefix=high_prefix)
    assert ev.names == ["GT_0.png"]


def test_from_folder_uses_pairs_when_present_else_noise(tmp_path, paired_dirs):
    paired = EvalSet.from_folder(tmp_path, 25)
    assert paired.names == ["p0.png", "p1.png"] and np.allclose(paired[0][0] * 2, paired[0][1], atol=1e-6)
    noisy = EvalSet.from_folder(tmp_path / "high", 25)
    assert "AWGN sigma=25" in noisy.description and not np.array_equal(noisy[0][0], noisy[0][1])


def test_gray_awgn_frames_are_monochrome(tmp_path):
    from mirnet.sdk.camera import luma

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    colour = EvalSet.from_clean(tmp_path, 25)
    gray = EvalSet.from_clean(tmp_path, 25, gray=True)
    noisy, clean = gray[0]
    assert np.array_equal(clean[..., 0], clean[..., 2]) and np.allclose(clean[..., 0], luma(colour[0][1]), atol=1e-6)
    assert np.array_equal(noisy[..., 0], noisy[..., 1])
    assert np.allclose(noisy[..., 0] - clean[..., 0], colour[0][0][..., 0] - colour[0][1][..., 0], atol=1e-6)
    assert "gray" in gray.description
