import statistics

import pytest
import torch
from torch.utils.data import TensorDataset

from kdtutor.data import stratified_indices, subset, without_classes
from kdtutor.experiments import best_class_shift, mean_std, over_seeds, paired_gain, pm, summarize
from kdtutor.metrics import expected_calibration_error, fit_temperature, reliability


def ece_by_loop(probs, labels, n_bins):
    """Independent ECE: loop over bins (lo, hi] and average |accuracy - confidence| weighted by bin size."""
    conf, pred = probs.max(1)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            acc = (pred[inside] == labels[inside]).double().mean()
            total += inside.sum().item() / len(labels) * abs(acc - conf[inside].mean()).item()
    return total


def test_ece_matches_an_independent_loop():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2000, 10, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 10, (2000,), generator=g)
    for n_bins, T in ((15, 1.0), (10, 2.0), (1, 0.5)):
        expected = ece_by_loop(torch.softmax(logits / T, 1), labels, n_bins)
        assert expected_calibration_error(logits, labels, n_bins, T) == pytest.approx(expected, abs=1e-12)


def test_ece_known_cases():
    # confidence 0.8 everywhere, accuracy 0.5 -> ECE 0.3
    logits = torch.log(torch.tensor([[0.8, 0.2]] * 4, dtype=torch.float64))
    labels = torch.tensor([0, 0, 1, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(0.3)
    rel = reliability(logits, labels, n_bins=10)
    assert rel.count.sum() == 4 and rel.count[7] == 4 and torch.isnan(rel.accuracy[0])
    # confident and always right -> 0
    assert expected_calibration_error(torch.tensor([[20.0, 0.0], [0.0, 20.0]]), torch.tensor([0, 1])) < 1e-8
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


def test_fit_temperature_recovers_the_true_temperature():
    g = torch.Generator().manual_seed(1)
    logits = 4 * torch.randn(20000, 10, generator=g)
    true_t = 2.5
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=g).flatten()
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)
    # and temperature scaling makes these logits calibrated
    assert expected_calibration_error(logits, labels, temperature=fit_temperature(logits, labels)) < 0.02
    assert expected_calibration_error(logits, labels) > 0.1


def test_stratified_indices_and_without_classes():
    labels = torch.arange(100) % 4
    idx = stratified_indices(labels, 5, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [5, 5, 5, 5] and torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, stratified_indices(labels, 5, seed=0))
    assert not torch.equal(idx, stratified_indices(labels, 5, seed=1))
    with pytest.raises(ValueError, match="n_per_class"):
        stratified_indices(labels, 26)
    kept = without_classes(labels, [1, 3])
    assert set(labels[kept].tolist()) == {0, 2} and len(kept) == 50
    ds = subset(TensorDataset(torch.arange(100).float(), labels), kept)
    assert isinstance(ds, TensorDataset) and torch.equal(ds.tensors[1], labels[kept])


def test_over_seeds_summarize_and_paired_gain():
    rows = over_seeds(lambda s: {"acc": 0.8 + 0.01 * s}, [0, 1, 2], arm="scratch", T=None)
    assert rows[1] == {"arm": "scratch", "T": None, "seed": 1, "acc": 0.81}
    kd = over_seeds(lambda s: {"acc": 0.82 + 0.011 * s}, [0, 1, 2], arm="kd")
    (summary,) = summarize(rows, "acc", by=["arm"])
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.81)
    assert summary["std"] == pytest.approx(statistics.stdev([0.8, 0.81, 0.82]))
    gain = paired_gain(kd, rows, "acc")
    assert gain["gains"] == pytest.approx([0.02, 0.021, 0.022]) and gain["clear"] and gain["verdict"] == "clear gain"
    assert paired_gain(rows, kd, "acc")["verdict"] == "clear loss"
    noisy = over_seeds(lambda s: {"acc": 0.81 + (0.02 if s == 0 else -0.01)}, [0, 1, 2])
    assert not paired_gain(noisy, rows, "acc")["clear"]
    assert paired_gain(noisy, rows, "acc")["verdict"] == "no clear difference"
    with pytest.raises(ValueError, match="seeds"):
        paired_gain(kd[:2], rows, "acc")
    assert pm(0.91234, 0.0015) == "91.23 ± 0.15"
    assert mean_std([2.0]) == (2.0, 0.0)


def test_best_class_shift():
    logits = torch.tensor([[2.0, 1.0], [2.0, 1.5], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    shift, acc = best_class_shift(logits, labels, 1, [0.0, 0.25, 0.75, 2.0])
    assert shift == 0.75 and acc == 1.0


def test_run_arm_pairs_seeds_and_reports_accuracies(small):
    import kdtutor as kd
    from kdtutor.experiments import run_arm

    train, val = small
    make = lambda: kd.MLP(hidden=(16,))  # noqa: E731
    a = run_arm("scratch", make, train, [0, 1], {"val": val}, epochs=1, device="cpu")
    b = run_arm("scratch", make, train, [0, 1], {"val": val}, epochs=1, device="cpu")
    assert [r["seed"] for r in a] == [0, 1] and a[0]["arm"] == "scratch"
    assert [r["val_acc"] for r in a] == [r["val_acc"] for r in b]  # same seed, same result
    assert a[0]["val_acc"] != a[1]["val_acc"] and 0 < a[0]["train_acc"] < 1
    assert kd.evaluate(a[0]["model"], val) == a[0]["val_acc"]
