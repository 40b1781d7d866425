import math
import statistics

import pytest
import torch
from torch.utils.data import TensorDataset

from kdtutor.data import stratified_indices, subset, without_classes
from kdtutor.evaluation import expected_calibration_error, fit_temperature, reliability
from kdtutor.experiments import (
    T_975,
    best_class_shift,
    compare,
    describe_gain,
    mean_std,
    over_seeds,
    paired_gain,
    plot_gains,
    pm,
    summarize,
    t_quantile,
)


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


def test_over_seeds_and_summarize():
    rows = over_seeds(lambda s: {"acc": 0.8 + 0.01 * s}, [0, 1, 2], arm="scratch", T=None)
    assert rows[1] == {"arm": "scratch", "T": None, "seed": 1, "acc": 0.81}
    (summary,) = summarize(rows, "acc", by=["arm"])
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.81)
    assert summary["std"] == pytest.approx(statistics.stdev([0.8, 0.81, 0.82]))
    assert pm(0.91234, 0.0015) == "91.23 ± 0.15"
    assert mean_std([2.0]) == (2.0, 0.0)


def _t_cdf(x: float, df: int, steps: int = 20_000) -> float:
    """P(T <= x) for Student's t with ``df`` degrees of freedom: Simpson's rule on the density from 0 to x."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    f = lambda t: c * (1 + t * t / df) ** (-(df + 1) / 2)  # noqa: E731
    h = x / steps
    total = f(0) + f(x) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return 0.5 + total * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 120])
def test_t_table_entries_are_the_975_quantiles(df):
    assert _t_cdf(T_975[df], df) == pytest.approx(0.975, abs=2e-5)


def test_t_quantile_between_and_beyond_the_table():
    assert t_quantile(4) == T_975[4] and t_quantile(35) == T_975[30]  # the wider neighbour
    assert t_quantile(10_000) == pytest.approx(1.96)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="df"):
            t_quantile(bad)


def _rows(values):
    return [{"seed": s, "acc": v} for s, v in enumerate(values)]


def test_paired_gain_interval_matches_a_hand_computation():
    control = _rows([0.80, 0.81, 0.79, 0.80, 0.82])
    treatment = _rows([0.82, 0.82, 0.80, 0.83, 0.83])
    gain = paired_gain(treatment, control, "acc")
    gains = [0.02, 0.01, 0.01, 0.03, 0.01]  # by hand
    mean = sum(gains) / 5
    sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / 4)
    half = 2.7764 * sd / math.sqrt(5)  # t_{0.975, 4} from a printed table
    assert gain["gains"] == pytest.approx(gains) and gain["n"] == 5
    assert gain["mean"] == pytest.approx(0.016) and gain["std"] == pytest.approx(sd)
    assert gain["ci"] == pytest.approx((mean - half, mean + half))
    assert gain["ci"] == pytest.approx((0.0049, 0.0271), abs=1e-4)  # golden: 0.016 ± 0.0111
    assert gain["clear"] and not gain["loss"] and gain["verdict"] == "clear gain"


def test_paired_gain_verdicts_on_constructed_gains():
    control = _rows([0.8] * 3)
    assert paired_gain(_rows([0.78, 0.785, 0.781]), control, "acc")["verdict"] == "clear loss"
    # mean 2.2 std: the old "mean > 2 std" rule called this clear; with 3 seeds its interval includes zero
    gains = [0.011, 0.020, 0.029]  # mean 0.020, std 0.009
    mean, sd = statistics.fmean(gains), statistics.stdev(gains)
    assert mean > 2 * sd
    old_clear = paired_gain(_rows([0.8 + g for g in gains]), control, "acc")
    assert old_clear["ci"][0] < 0 < old_clear["ci"][1] and old_clear["verdict"] == "no clear difference"
    # the same per-seed spread over more seeds narrows the interval until it excludes zero
    more = [0.01, 0.03] * 4
    assert paired_gain(_rows([0.8 + g for g in more]), _rows([0.8] * 8), "acc")["verdict"] == "clear gain"
    # an interval touching zero is not clear
    assert paired_gain(_rows([0.8, 0.8, 0.8]), control, "acc")["verdict"] == "no clear difference"


def test_paired_gain_needs_paired_seeds_and_three_of_them():
    rows = _rows([0.8, 0.81, 0.82])
    with pytest.raises(ValueError, match="seeds"):
        paired_gain(rows[:2], rows, "acc")
    with pytest.raises(ValueError, match="at least 3 seeds"):
        paired_gain(rows[:2], rows[:2], "acc")


def test_describe_compare_and_plot_gains(capsys):
    control = _rows([0.80, 0.81, 0.79])
    treatment = _rows([0.82, 0.83, 0.80])
    gain = compare(treatment, control, "acc")
    out = capsys.readouterr().out
    assert "scratch: acc 80.00 ± 1.00 %" in out and "per seed: 82.00, 83.00, 80.00" in out
    assert describe_gain(gain) in out and describe_gain(gain).endswith("-> clear gain")
    assert describe_gain(gain).startswith("+1.67 points (95% CI +0.23 to +3.10)")
    assert describe_gain(gain, scale=1, unit="bits", digits=4).startswith("+0.0167 bits (95% CI +0.0023 to +0.0310)")
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_gains({"a": gain, "b": paired_gain(control, treatment, "acc")})
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]


def test_best_class_shift():
    logits = torch.tensor([[2.0, 1.0], [2.0, 1.5], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 1])
    shift, acc = best_class_shift(logits, labels, 1, [0.0, 0.25, 0.75, 2.0])
    assert shift == 0.75 and acc == 1.0


def test_best_class_shift_moves_several_classes_together():
    import pytest

    from kdtutor.experiments import shift_class

    logits = torch.tensor([[2.5, 3.0, 0.0], [0.0, 2.0, 0.0], [0.0, 1.0, 2.0], [2.0, 0.0, 2.5]])
    labels = torch.tensor([0, 1, 2, 0])  # classes 1 and 2 are too strong on the first and last rows ...
    shifted = shift_class(logits, [1, 2], -1.0)
    assert torch.equal(shifted[:, 0], logits[:, 0]) and torch.equal(shifted[:, 1:], logits[:, 1:] - 1.0)
    # ... and too weak nowhere else: a shift of -1 fixes both; -3 breaks rows 1 and 2
    assert best_class_shift(logits, labels, [1, 2], [0.0, -1.0, -3.0]) == (-1.0, 1.0)
    for bad in ([], [3], [True], 1.5):
        with pytest.raises(ValueError, match="cls"):
            shift_class(logits, bad, 1.0)


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


def test_run_arm_names_its_renamed_argument(small):
    from kdtutor.experiments import run_arm
    from kdtutor.models import MLP

    train, val = small
    with pytest.raises(TypeError, match=r"progress: renamed verbose \(run_arm\(..., verbose=False\)\)"):
        run_arm("scratch", lambda: MLP(hidden=(8,)), train, [0], {}, epochs=1, progress=False)


def test_run_arm_draws_the_data_from_the_seed(small):
    import kdtutor as kd
    from kdtutor.experiments import run_arm

    train, val = small
    seen = []

    def data(seed):
        seen.append(seed)
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:40]
        return {"train": kd.subset(train, idx), "lr": 1e-2}

    make = lambda: kd.MLP(hidden=(8,))  # noqa: E731
    rows = run_arm("few", make, data, [3, 4], {"val": val}, epochs=1, device="cpu")
    assert seen == [3, 4] and [r["seed"] for r in rows] == [3, 4]
    assert run_arm("few", make, lambda s: data(s)["train"], [3], {}, epochs=1, lr=1e-2, device="cpu")[0][
        "train_acc"] == rows[0]["train_acc"]  # a dataset or a dict with "train": the same run
    with pytest.raises(ValueError, match="'train'"):
        run_arm("few", make, lambda s: {"data": train}, [0], {}, epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"both set \['lr'\]"):
        run_arm("few", make, data, [0], {}, epochs=1, lr=1e-3, device="cpu")


def test_few_labels_draws_a_balanced_subset_per_seed_with_the_teachers_rows(small):
    import kdtutor as kd
    from kdtutor.experiments import few_labels

    train, _ = small
    images, labels = train.tensors
    teacher = kd.MLP(hidden=(8,)).eval()
    with torch.no_grad():
        logits = teacher(images)
    plain, cached, online = (few_labels(train, 5), few_labels(train, 5, teacher_logits=logits),
                             few_labels(train, 5, teacher=teacher))
    a, b = plain(0), plain(1)
    assert len(a) == 50 and torch.equal(a.tensors[1].bincount(), torch.full((10,), 5))
    assert not torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(plain(0).tensors[0], a.tensors[0])
    # the cached rows belong to the drawn images: the teacher run on them gives the same logits
    c, o = cached(0), online(0)
    assert torch.equal(c["train"].tensors[0], a.tensors[0]) and torch.equal(o["train"].tensors[0], a.tensors[0])
    torch.testing.assert_close(c["teacher_logits"], o["teacher_logits"])
    with pytest.raises(ValueError, match="not both"):
        few_labels(train, 5, teacher_logits=logits, teacher=teacher)
    with pytest.raises(ValueError, match="teacher_logits: expected one row per image"):
        few_labels(train, 5, teacher_logits=logits[:10])
    for bad in (10_000, 0, 2.5, True):
        with pytest.raises(ValueError, match="per_class: expected an int from 1 to"):
            few_labels(train, bad)
    with pytest.raises(TypeError, match="train: expected a TensorDataset"):
        few_labels([(images[0], 0)], 1)
