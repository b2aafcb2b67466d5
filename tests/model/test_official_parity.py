"""Our network reproduces the official MIRNet_v2 key layout and numbers."""
import numpy as np
import pytest
import torch

from mirnet.sdk.errors import ConfigError
from mirnet.sdk.model import load_model
from mirnet.sdk.model.arch import OFFICIAL_KWARGS, from_official
from official_cases import CASES, case_input, official_weights

REFERENCE = np.load(__import__("pathlib").Path(__file__).parent / "data" / "official_outputs.npz")


def _with_official_weights(kwargs):
    model = from_official(**kwargs).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {k: torch.from_numpy(v) for k, v in official_weights(shapes).items()}
    model.load_state_dict(state, strict=True)
    return model, state


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_numbers(case):
    kwargs = CASES[case]
    model, _ = _with_official_weights(kwargs)
    x = case_input(kwargs.get("inp_channels", 3))
    with torch.no_grad():
        y = model(torch.from_numpy(x)).numpy()
    want = REFERENCE[case]
    assert y.shape == want.shape
    assert np.abs(y - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_official_pth_checkpoint_loads_by_inference(tmp_path):
    kwargs = CASES["defocus"]
    model, state = _with_official_weights(kwargs)
    path = tmp_path / "official.pth"
    torch.save({"params": state}, path)
    loaded = load_model(path)
    assert loaded.config == model.config
    x = torch.from_numpy(case_input(6))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_official_ignored_arguments_really_ignored():
    base = from_official(n_feat=16)
    ignored = from_official(n_feat=16, n_RRG=7, height=5, width=9, scale=3)
    assert base.config == ignored.config
    assert len(ignored.body) == 4
    assert [m.body[0].dau_top.body[0].groups for m in ignored.body] == [1, 2, 4, 4]


def test_official_kwargs_are_exactly_the_official_signature():
    assert OFFICIAL_KWARGS == ("inp_channels", "out_channels", "n_feat", "chan_factor", "n_RRG",
                               "n_MRB", "height", "width", "scale", "bias", "task")
    with pytest.raises(ConfigError, match="n_rrg"):
        from_official(n_rrg=2)


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_pickled_objects_are_refused(tmp_path):
    from mirnet.sdk.errors import ArtifactError

    path = tmp_path / "evil.pth"
    torch.save({"params": {"conv_in.weight": torch.zeros(1)}, "x": _RunsCode()}, path)

    with pytest.raises(ArtifactError, match="weights-only"):
        load_model(path)
