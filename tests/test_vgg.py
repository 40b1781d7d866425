"""The article's VGG-style teacher made runnable (VGG12): its shapes on grey 28x28 and RGB 32x32 images, the width
multiplier, its argument checks, its checkpoint round trip, and its cost counted on the meta device against a
hand formula (about 92M parameters at full width, never allocated)."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.models import VGG12, cost_on_meta, vgg12, vgg12_fmnist

ROOT = Path(__file__).resolve().parents[1]
STAGES = (64, 128, 256, 512, 1024, 2048)


def full_width_by_hand(c_in: int = 3, size: int = 32, classes: int = 10) -> tuple[int, int]:
    """Parameters and MACs of VGG12 at width 1, written out: 3x3 convolutions without bias (BatchNorm follows, with
    a weight and a bias per channel), pools after stages 1-3, then FC 2048*16 -> 512 -> classes."""
    params = macs = 0
    for stage, c in enumerate(STAGES):
        for _ in range(2):
            params += c_in * c * 9 + 2 * c
            macs += c_in * c * 9 * size * size
            c_in = c
        if stage < 3:
            size = (size + 1) // 2
    params += 2048 * 16 * 512 + 512 + 512 * classes + classes
    macs += 2048 * 16 * 512 + 512 * classes
    return params, macs


def test_full_width_cost_matches_the_formula_without_allocating():
    params, macs = full_width_by_hand()
    assert cost_on_meta(vgg12, (3, 32, 32)) == {"params": params, "macs": macs}
    assert 91e6 < params < 93e6  # "about 92M parameters"


def test_cost_on_meta_agrees_with_a_real_model():
    real = vgg12_fmnist()
    cost = cost_on_meta(vgg12_fmnist, (1, 28, 28))
    assert cost["params"] == kd.count_params(real)
    student = cost_on_meta(kd.student_cnn, (1, 28, 28))  # 8 and 16 channels, pooled twice, one FC: by hand
    assert student == {"params": kd.count_params(kd.student_cnn()),
                       "macs": 1 * 8 * 9 * 28 * 28 + 8 * 16 * 9 * 14 * 14 + 16 * 7 * 7 * 10}


@pytest.mark.parametrize("c_in, size", [(1, 28), (3, 32), (3, 40)])
def test_shapes_on_grey_and_rgb_images_of_any_size(c_in, size):
    model = vgg12(in_channels=c_in, width=1 / 32).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, c_in, size, size)).shape == (2, 10)
    assert model.features[-1].output_size == 4


def test_the_width_multiplier_scales_every_layer():
    narrow, wide = vgg12(width=1 / 32), vgg12(width=1 / 16)
    convs = [[m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] for model in (narrow, wide)]
    assert convs[0] == [c // 32 for c in STAGES for _ in range(2)] and convs[1] == [2 * c for c in convs[0]]
    assert narrow.classifier[1].out_features == 16 and wide.classifier[1].out_features == 32
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in vgg12(width=1 / 32, batch_norm=False).modules())


@pytest.mark.parametrize("kwargs, name", [({"width": 0}, "width"), ({"width": "half"}, "width"),
                                          ({"in_channels": 0}, "in_channels"), ({"num_classes": 2.5}, "num_classes"),
                                          ({"dropout": 1.0}, "dropout")])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        VGG12(**kwargs)


def test_checkpoint_round_trip_rebuilds_it_from_the_file(tmp_path):
    torch.manual_seed(0)
    model = vgg12(in_channels=1, width=1 / 32).eval()
    kd.save(model, tmp_path / "vgg.pt")
    loaded, _ = kd.load(tmp_path / "vgg.pt")
    x = torch.randn(2, 1, 28, 28)
    assert isinstance(loaded, VGG12) and loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def test_the_appendix_cifar_recipe_runs_when_opted_in(monkeypatch, capsys):
    """The appendix's opt-in cell as written, on 64 random 3x32x32 images, a VGG12 at 1/64 width and one epoch:
    the recipe itself (augmentation, then distillation from the teacher online) runs; only its sizes are small."""
    cells = json.loads((ROOT / "book" / "vgg-done-right.ipynb").read_text())["cells"]
    (cell,) = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and "KDTUTOR_ONLINE" in "".join(
        c["source"])]
    g = torch.Generator().manual_seed(0)
    fake = TensorDataset(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
    monkeypatch.setenv("KDTUTOR_ONLINE", "1")
    monkeypatch.setattr(kd, "load_cifar10", lambda: (fake, fake))
    monkeypatch.setattr(kd, "vgg12", lambda **kwargs: vgg12(**{**kwargs, "width": 1 / 64}))
    config = kd.TrainConfig
    monkeypatch.setattr(kd, "TrainConfig", lambda **kwargs: config(**{**kwargs, "epochs": 1}))
    exec(cell, {"kd": kd, "os": os})
    out = capsys.readouterr().out
    assert "VGG12 teacher:" in out and "distilled student:" in out and "skipped" not in out
