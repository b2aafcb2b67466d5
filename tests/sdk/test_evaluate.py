"""mirnet eval's scoring: input and output PSNR, the NLM baseline on colour and gray frames, its
tuning, and the camera protocols from the command line."""
import json

import numpy as np
import pytest
from imagekit import rand_u8, write_rgb

from mirnet.sdk.cli import main
from mirnet.sdk.evaluate import NLM_GRID, NLM_PARAMS, nlm, score, tune_nlm


def pairs(gray: bool, sigma: float = 15, n: int = 2):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        clean = np.clip(np.random.default_rng(1).random((48, 48, 1 if gray else 3)) * 0.2 + 0.4, 0, 1)
        clean = np.repeat(clean, 3, axis=2) if gray else clean
        noise = rng.normal(0, sigma / 255, clean.shape[:2] + ((1,) if gray else (3,)))
        noisy = np.clip(clean + (np.repeat(noise, 3, axis=2) if gray else noise), 0, 1)
        out.append((noisy.astype(np.float32), clean.astype(np.float32)))
    return out


def test_score_reports_input_and_output_psnr():
    data = pairs(gray=False)
    result = score(lambda x: x, data)
    assert result["psnr"] == pytest.approx(result["input_psnr"]) and result["n"] == 2
    assert score(lambda x: np.full_like(x, 0.5), data)["psnr"] > result["input_psnr"]  # the clean images are near 0.5


def test_nlm_denoises_gray_frames_as_gray():
    noisy, clean = pairs(gray=True)[0]
    out = nlm(noisy, {**NLM_PARAMS, "h": 12})
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert score(lambda x: nlm(x, {**NLM_PARAMS, "h": 12}), [(noisy, clean)])["psnr"] > \
        score(lambda x: x, [(noisy, clean)])["psnr"] + 2


def test_tune_nlm_picks_the_best_strength():
    light, heavy = tune_nlm(pairs(False, sigma=3), grid=(2, 30))["h"], tune_nlm(pairs(False, sigma=40), grid=(2, 30))["h"]
    assert (light, heavy) == (2, 30)


def test_eval_camera_protocol_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("av")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_rgb(tmp_path / "clean" / f"{i}.png", rand_u8(rng, 40, 56, 60, 200))
    assert main(["eval", "--baseline", "nlm", "--data", str(tmp_path / "clean"), "--protocol", "camera-jpeg",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "camera preset camera-jpeg" in result["protocol"] and result["n"] == 2
    assert 10 < result["input_psnr"] < 40 and np.isfinite(result["psnr"])
    assert main(["eval", "--baseline", "nlm", "--tune", "--data", str(tmp_path / "clean"), "--protocol",
                 "camera-jpeg", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out)
    assert tuned["psnr"] >= result["psnr"] - 1e-9 and tuned["nlm_params"]["h"] in NLM_GRID
    assert main(["eval", "--model", "denoise-lite", "--tune", "--data", str(tmp_path / "clean"), "--sigma", "5"]) == 2
    assert main(["eval", "--baseline", "nlm", "--data", str(tmp_path / "clean"), "--sigma", "15", "--gray",
                 "--json"]) == 0
    gray = json.loads(capsys.readouterr().out)
    assert "gray frames" in gray["protocol"] and gray["psnr"] > gray["input_psnr"]
    assert main(["eval", "--baseline", "nlm", "--data", str(tmp_path / "clean"), "--protocol", "camera-mono",
                 "--gray"]) == 2
    assert "--gray" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--baseline", "nlm", "--data", str(tmp_path / "clean"), "--protocol", "x"])
    assert exc.value.code == 2


def test_every_camera_denoising_preset_has_a_tuned_nlm_and_h264_mono_is_h264_on_a_gray_sensor():
    from mirnet.sdk.camera import PRESETS
    from mirnet.sdk.evaluate import NLM_TUNED

    assert set(NLM_TUNED) == set(PRESETS) - {"lowlight"}
    colour, mono = PRESETS["camera-h264"], PRESETS["camera-h264-mono"]
    assert (mono.peak, mono.read_sigma, mono.codecs, mono.crf, mono.pframe_prob) == \
        (colour.peak, colour.read_sigma, colour.codecs, colour.crf, colour.pframe_prob)
    assert (mono.mono_prob, mono.bayer_prob) == (1.0, 0.0)
