"""fit under torchrun: two CPU processes on the gloo backend against one process (the worker is tests/ddp_worker.py).

The two processes train with a per-process batch of 64, i.e. a global batch of 128; one process with batch 128 takes
the same steps on the same samples (the global order is the same), so the two runs agree up to float rounding: the
stated tolerance is 1e-4 on every weight and 0.5 points of validation accuracy.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor.data import OnDevice

PER_RANK_BATCH, WORLD = 64, 2
WORKER = Path(__file__).parent / "ddp_worker.py"


def synthetic(n: int = 1000):
    """Four Gaussian classes in 20 dimensions (train ``n``, val 300) and a fixed linear 'teacher''s logits."""
    g = torch.Generator().manual_seed(0)
    centres = 2 * torch.randn(4, 20, generator=g)
    y = torch.randint(0, 4, (n + 300,), generator=g)
    x = centres[y] + torch.randn(n + 300, 20, generator=g)
    logits = x[:n] @ centres.T / 4
    return TensorDataset(x[:n], y[:n]), TensorDataset(x[n:], y[n:]), logits


def test_shards_are_disjoint_complete_and_equal_in_steps():
    data = OnDevice(TensorDataset(torch.zeros(1000, 3), torch.zeros(1000, dtype=torch.int64)), "cpu")
    whole = [b.idx for b in data.batches(128, data.generator(5), drop_single=True)]
    parts = [[b.idx for b in data.batches(64, data.generator(5), True, rank, WORLD)] for rank in range(WORLD)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 8  # every process takes the same number of steps
    for step, global_batch in enumerate(whole):  # the processes' parts of a step make up one process's batch
        assert torch.equal(torch.cat([parts[0][step], parts[1][step]]), global_batch)
    seen = torch.cat([i for part in parts for i in part])
    assert len(seen) == len(set(seen.tolist())) == 1000  # disjoint and complete
    # a last global batch that cannot give each process two samples is skipped, as one sample is in one process
    odd = OnDevice(TensorDataset(torch.zeros(131, 3), torch.zeros(131, dtype=torch.int64)), "cpu")
    sizes = [[len(b.idx) for b in odd.batches(64, odd.generator(0), True, r, WORLD)] for r in range(WORLD)]
    assert sizes == [[64], [64]]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1]),
           "CUDA_VISIBLE_DEVICES": ""}  # two CPU processes on gloo, on any machine
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
                          str(WORKER), str(folder)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return folder, [json.loads((folder / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_two_processes_train_like_one_with_the_global_batch(ranks):
    _, (r0, r1) = ranks
    train, val, logits = synthetic()
    torch.manual_seed(0)
    model = kd.MLP(in_features=20, hidden=(32,), num_classes=4)
    one = kd.fit(model, train, epochs=3, batch_size=PER_RANK_BATCH * WORLD, lr=3e-3, val=val, verbose=False,
                 device="cpu", loss=kd.Distillation(teacher_logits=logits, temperature=2.0, alpha=0.5))
    for r in (r0, r1):
        same = {k: v for k, v in r["normal"]["history"].items() if k != "seconds"}
        assert same == {k: v for k, v in r0["normal"]["history"].items() if k != "seconds"}  # one history
        weights = [torch.tensor(w) for w in r["normal"]["weights"]]
        pairs = zip(weights, model.parameters(), strict=True)
        assert all(torch.allclose(w, p.detach().flatten(), atol=1e-4) for w, p in pairs)
    two = kd.History.from_dict(r0["normal"]["history"])
    assert abs(two.val_acc[-1] - one.val_acc[-1]) <= 0.005 and two.val_acc[-1] > 0.9
    assert two.train_loss == pytest.approx(one.train_loss, rel=1e-4)
    assert r0["normal"]["printed"].count("epoch ") == 3 and r1["normal"]["printed"] == ""  # only rank 0 prints


def test_each_process_trained_on_its_own_shard(ranks):
    _, (r0, r1) = ranks
    steps = 1000 // (PER_RANK_BATCH * WORLD) + 1  # 7 full global batches and one of 104 samples
    epochs = [[sum(r["normal"]["seen"][e * steps:(e + 1) * steps], []) for e in range(3)] for r in (r0, r1)]
    assert len(r0["normal"]["seen"]) == len(r1["normal"]["seen"]) == 3 * steps
    for e in range(3):
        assert not set(epochs[0][e]) & set(epochs[1][e])
        assert sorted(epochs[0][e] + epochs[1][e]) == list(range(1000))
    assert epochs[0][0] != epochs[0][1]  # reshuffled every epoch


def test_a_fault_on_one_process_stops_every_process(ranks):
    folder, (r0, r1) = ranks
    assert "on rank 1" in r1["nan"]["raised"] and "another rank" in r0["nan"]["raised"]
    assert r0["nan"]["epochs"] == r1["nan"]["epochs"] == 1  # epoch 1 completed, epoch 2 stopped on both
    for r in (r0, r1):
        assert r["interrupt"] == {"raised": None, "epochs": 1, "interrupted": True}
    assert (folder / "saved-by-rank0.pt").is_file() and not (folder / "saved-by-rank1.pt").exists()


def test_the_torchrun_example_script_runs_on_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDTUTOR_CACHE": str(tmp_path / "cache")}
    script = Path(__file__).parents[1] / "scripts" / "distill_ddp.py"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
                          str(script), "--epochs", "1", "--limit", "1000", "--global-batch", "128", "--lr", "2e-3",
                          "--device", "cpu", "--out", str(tmp_path / "s.pt")],
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("2 process(es), global batch 128") == 1  # rank 0 alone reports
    _, meta = kd.load(tmp_path / "s.pt")
    assert 0.2 < meta["test_acc"] < 1 and len(meta["history"]["epoch"]) == 1


def test_a_map_style_dataset_keeps_the_dataloaders_seeded_order():
    """Datasets that are not tensors are read sample by sample, in the order a seeded DataLoader draws."""
    samples = [(torch.full((2,), float(i)), i % 3) for i in range(10)]
    data = OnDevice(samples, "cpu")
    assert data.tensors is None
    mine, reference = data.generator(0), torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(range(10), batch_size=4, shuffle=True, generator=reference)
    for _ in range(2):  # two epochs: the generator advances the same way
        expected = [idx.tolist() for idx in loader]
        got = [b.idx.tolist() for b in data.batches(4, mine)]
        assert got == expected
