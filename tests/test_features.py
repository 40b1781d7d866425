"""Losses beyond the logits (FitNets hints, attention transfer, decoupled KD) and their objectives.

Each loss is compared with its formula written out a second way (loops, or PyTorch's own KL as the oracle for the
DKD decomposition); the objectives are run through ``fit`` on a tiny random problem.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.evaluation import compute_features
from kdtutor.losses import attention_map, attention_transfer_loss, dkd_loss, dkd_terms, hint_loss
from kdtutor.training import AttentionTransfer, CrossEntropy, DecoupledKD, Distillation, FitNets, Sum

TEACHER_LAYERS = ("features.3", "features.7")  # the book's teacher: 32 x 14 x 14 and 64 x 7 x 7
STUDENT_LAYERS = ("features.2", "features.5")  # the small CNN: 8 x 14 x 14 and 16 x 7 x 7


# --- hints --------------------------------------------------------------------------------------------------------

def test_hint_loss_is_half_the_mean_squared_difference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    expected = 0.5 * sum((a - b) ** 2 for a, b in zip(s.flatten().tolist(), t.flatten().tolist(), strict=True)) / 96
    assert hint_loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert hint_loss(t, t).item() == 0.0


def test_hint_loss_names_both_shapes_when_no_regressor_was_applied():
    with pytest.raises(ValueError, match=r"\(2, 8, 14, 14\).*\(2, 32, 14, 14\).*regressor"):
        hint_loss(torch.zeros(2, 8, 14, 14), torch.zeros(2, 32, 14, 14))


# --- attention transfer -------------------------------------------------------------------------------------------

def _attention_by_hand(a: torch.Tensor) -> list[list[float]]:
    rows = []
    for image in a:  # C x H x W
        c, h, w = image.shape
        q = [sum(image[k, i, j].item() ** 2 for k in range(c)) / c for i in range(h) for j in range(w)]
        norm = math.sqrt(sum(v * v for v in q))
        rows.append([v / norm for v in q])
    return rows


def test_attention_map_against_a_loop():
    a = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    q = attention_map(a)
    assert q.shape == (2, 20)
    expected = [v for row in _attention_by_hand(a) for v in row]
    assert q.flatten().tolist() == pytest.approx(expected, rel=1e-5)
    assert attention_map(torch.ones(1, 4, 3, 3)).flatten().tolist() == pytest.approx([1 / 3] * 9)  # 1/sqrt(9)


def test_attention_transfer_loss_against_a_loop_with_different_channel_counts():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 7, 4, 4, generator=g)
    qs, qt = _attention_by_hand(s), _attention_by_hand(t)
    expected = sum((x - y) ** 2 for rs, rt in zip(qs, qt, strict=True) for x, y in zip(rs, rt, strict=True)) / 32
    assert attention_transfer_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert attention_transfer_loss(t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_attention_transfer_refuses_different_resolutions_and_non_maps():
    with pytest.raises(ValueError, match=r"\(2, 32, 7, 7\).*\(2, 8, 14, 14\)"):
        attention_transfer_loss(torch.zeros(2, 8, 14, 14), torch.zeros(2, 32, 7, 7))
    with pytest.raises(ValueError, match="features"):
        attention_map(torch.zeros(2, 10))
    with pytest.raises(ValueError, match="p:"):
        attention_map(torch.zeros(1, 1, 2, 2), p=0)


# --- decoupled KD -------------------------------------------------------------------------------------------------

def _logits(seed: int, batch: int = 6, classes: int = 5, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, classes, generator=g), scale * torch.randn(batch, classes, generator=g),
            torch.randint(0, classes, (batch,), generator=g))


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_splits_into_tckd_and_weighted_nckd(t):
    """Zhao et al.'s eq. 6, row by row, against PyTorch's KL of the full distributions."""
    s, v, y = _logits(3)
    tckd, nckd, rest = dkd_terms(s, v, y, t)
    full = F.kl_div(F.log_softmax(s / t, -1), F.log_softmax(v / t, -1), log_target=True, reduction="none").sum(-1)
    assert (tckd + rest * nckd).tolist() == pytest.approx(full.tolist(), rel=1e-5, abs=1e-7)


def test_dkd_terms_against_the_binary_and_non_target_distributions_written_out():
    s, v, y = _logits(4, batch=3, classes=4)
    tckd, nckd, _ = dkd_terms(s, v, y, 2.0)
    for b in range(3):
        ps, pt = torch.softmax(s[b] / 2, -1), torch.softmax(v[b] / 2, -1)
        k = int(y[b])
        bs, bt = [ps[k].item(), 1 - ps[k].item()], [pt[k].item(), 1 - pt[k].item()]
        assert tckd[b].item() == pytest.approx(sum(q * math.log(q / p) for q, p in zip(bt, bs, strict=True)),
                                               rel=1e-4)
        others = [i for i in range(4) if i != k]
        hs, ht = torch.softmax(s[b, others] / 2, -1), torch.softmax(v[b, others] / 2, -1)
        assert nckd[b].item() == pytest.approx(sum(q * math.log(q / p) for q, p in
                                                   zip(ht.tolist(), hs.tolist(), strict=True)), rel=1e-4)


def test_dkd_gradients_are_finite_and_match_kd_when_the_weights_recouple_it():
    """With the non-target weight set to the teacher's 1 - p_t per row, DKD's terms are KD's (T^2 KL) again."""
    s, v, y = _logits(8)
    s.requires_grad_(True)
    tckd, nckd, rest = dkd_terms(s, v, y, 4.0)
    ((tckd + rest * nckd).mean() * 16).backward()
    grad_split = s.grad.clone()
    s.grad = None
    kd.kd_loss(s, v, 4.0).backward()
    assert torch.isfinite(grad_split).all() and torch.allclose(grad_split, s.grad, atol=1e-6)


def test_dkd_loss_is_cross_entropy_plus_weighted_terms_and_survives_extreme_logits():
    s, v, y = _logits(5)
    tckd, nckd, _ = dkd_terms(s, v, y, 4.0)
    expected = F.cross_entropy(s, y) + 16 * (1.0 * tckd.mean() + 8.0 * nckd.mean())
    assert dkd_loss(s, v, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert dkd_loss(s, v, y, tckd_weight=0, nckd_weight=0).item() == pytest.approx(F.cross_entropy(s, y).item())
    big = 50 * torch.sign(torch.randn(4, 10, generator=torch.Generator().manual_seed(6)))
    assert torch.isfinite(dkd_loss(big, -big, torch.arange(4), temperature=1.0))


def test_dkd_loss_bad_inputs():
    s, v, y = _logits(7)
    with pytest.raises(ValueError, match="temperature"):
        dkd_loss(s, v, y, temperature=0)
    with pytest.raises(ValueError, match="nckd_weight"):
        dkd_loss(s, v, y, nckd_weight=-1)
    with pytest.raises(ValueError, match="teacher_logits"):
        dkd_loss(s, v[:, :4], y)
    with pytest.raises(ValueError, match="targets"):
        dkd_loss(s, v, y + 10)


# --- objectives through fit ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))
    teacher = kd.teacher_cnn().eval()
    return train, teacher, compute_features(teacher, train, TEACHER_LAYERS)


def test_compute_features_returns_one_row_per_sample_in_order(tiny):
    train, teacher, feats = tiny
    assert feats["features.3"].shape == (48, 32, 14, 14) and feats["features.7"].shape == (48, 64, 7, 7)
    with kd.record_activations(teacher, ["features.7"]) as acts, torch.no_grad():
        teacher(train.tensors[0][5:6])
    assert torch.allclose(feats["features.7"][5:6], acts["features.7"], atol=1e-6)
    with pytest.raises(ValueError, match="layers"):
        compute_features(teacher, train, [])


def test_fitnets_sizes_its_regressors_from_the_student_and_trains_them(tiny):
    train, _, feats = tiny
    torch.manual_seed(0)
    student = kd.student_cnn()
    hints = FitNets(feats, dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True)), weight=1.0)
    hints.attach(student, kd.data.OnDevice(train, "cpu"))
    conv = hints.regressors["features_2"]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (8, 32, (1, 1))
    assert hints.regressors["features_5"].weight.shape == (64, 16, 1, 1)
    before = conv.weight.detach().clone()
    history = kd.fit(student, train, loss=Sum(CrossEntropy(), hints), epochs=1, batch_size=16, device="cpu",
                     verbose=False)
    assert hints.regressors["features_2"] is conv  # same widths: kept, and trained by fit's optimizer
    assert not torch.equal(conv.weight, before)
    assert math.isfinite(history.train_loss[-1])
    assert not any(k.startswith("regressors") for k in student.state_dict())  # not part of the student
    wider = kd.CNN(channels=(12, 16), hidden=0, batch_norm=False)
    kd.fit(wider, train, loss=Sum(CrossEntropy(), hints), epochs=1, batch_size=16, device="cpu", verbose=False)
    assert hints.regressors["features_2"].in_channels == 12  # another student: new regressors


def test_fitnets_regressors_start_from_the_runs_seed(tiny):
    train, _, feats = tiny
    weights = []
    for draws in (1, 7):
        torch.manual_seed(0)
        student = kd.student_cnn()
        torch.rand(draws)  # a different global random state each time
        hints = FitNets(feats, {"features.2": "features.3"})
        kd.fit(student, train, loss=hints, epochs=1, batch_size=16, seed=3, device="cpu", verbose=False)
        weights.append(hints.regressors["features_2"].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def _batch(train, idx):
    return kd.data.Batch(train.tensors[0][idx], train.tensors[1][idx], idx)


def test_feature_objectives_read_the_teacher_rows_of_the_batch(tiny):
    """Each objective equals its loss function on the teacher's rows picked by the batch's sample indices."""
    train, teacher, feats = tiny
    idx = torch.tensor([7, 2, 30, 11])
    student_feats = {"features.2": torch.randn(4, 8, 14, 14), "features.5": torch.randn(4, 16, 7, 7)}
    pairs = dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True))
    at = AttentionTransfer(feats, pairs, weight=10.0)
    expected = 10.0 * sum(attention_transfer_loss(student_feats[s], feats[t][idx]) for s, t in pairs.items())
    assert at(torch.zeros(4, 10), _batch(train, idx), student_feats).item() == pytest.approx(expected.item())
    hints = FitNets(feats, {"features.5": "features.7"}, weight=2.0)
    hints.attach(kd.student_cnn(), kd.data.OnDevice(train, "cpu"))
    r = hints.regressors["features_5"]
    expected = 2.0 * hint_loss(r(student_feats["features.5"]), feats["features.7"][idx])
    assert hints(torch.zeros(4, 10), _batch(train, idx), student_feats).item() == pytest.approx(expected.item())
    logits = kd.compute_logits(teacher, train, verbose=False)
    out = torch.randn(4, 10)
    dkd = DecoupledKD(teacher_logits=logits, temperature=2, tckd_weight=0.5, nckd_weight=3)
    expected = dkd_loss(out, logits[idx], train.tensors[1][idx], 2.0, 0.5, 3.0)
    assert dkd(out, _batch(train, idx)).item() == pytest.approx(expected.item())


def test_attention_transfer_and_kd_summed_through_fit(tiny):
    train, teacher, feats = tiny
    logits = kd.compute_logits(teacher, train, verbose=False)
    torch.manual_seed(0)
    student = kd.student_cnn()
    loss = Sum(Distillation(teacher_logits=logits, temperature=4, alpha=0.9),
               AttentionTransfer(feats, dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True))))
    assert loss.features == STUDENT_LAYERS
    history = kd.fit(student, train, loss=loss, epochs=1, batch_size=16, device="cpu", verbose=False)
    assert math.isfinite(history.train_loss[-1])


def test_sum_adds_its_terms():
    out, y = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    batch = kd.data.Batch(torch.zeros(4, 1), y, torch.arange(4))
    assert Sum(CrossEntropy(), CrossEntropy())(out, batch, {}).item() == pytest.approx(
        2 * F.cross_entropy(out, y).item())
    with pytest.raises(ValueError, match="terms"):
        Sum()


def test_feature_objectives_bad_input(tiny):
    train, _, feats = tiny
    pairs = dict(zip(STUDENT_LAYERS, TEACHER_LAYERS, strict=True))
    with pytest.raises(ValueError, match=r"teacher layers \['features.9'\]"):
        AttentionTransfer(feats, {"features.2": "features.9"})
    with pytest.raises(ValueError, match="pairs"):
        FitNets(feats, {})
    short = {k: v[:10] for k, v in feats.items()}
    with pytest.raises(ValueError, match="10 rows"):
        kd.fit(kd.student_cnn(), train, loss=AttentionTransfer(short, pairs), epochs=1, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="augment"):
        kd.fit(kd.student_cnn(), train, loss=AttentionTransfer(feats, pairs), epochs=1, device="cpu",
               augment=kd.RandomShiftFlip(), verbose=False)
    flat = FitNets(feats, {"features.1": "features.3"})  # an MLP's hidden layer is not a feature map
    with pytest.raises(ValueError, match=r"pairs \(the output of student layer 'features.1'\).*\(2, 128\)"):
        kd.fit(kd.MLP(hidden=(128,)), train, loss=Sum(CrossEntropy(), flat), epochs=1, device="cpu", verbose=False)
    crossed = {"features.2": "features.7"}  # 14 x 14 against 7 x 7
    with pytest.raises(ValueError, match=r"\(16, 64, 7, 7\).*\(16, 8, 14, 14\)"):
        kd.fit(kd.student_cnn(), train, loss=AttentionTransfer(feats, crossed), epochs=1, batch_size=16,
               device="cpu", verbose=False)
