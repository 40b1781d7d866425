"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): fit in three situations, one JSON per rank.

1. ``normal``: distillation from cached logits with validation; records every training step's sample indices (the
   shards), the history, the weights and what the process printed.
2. ``nan``: rank 1's model returns NaN at one step of epoch 2; every rank must stop with FloatingPointError.
3. ``interrupt``: rank 1 receives SIGINT (Ctrl-C) in epoch 2; every rank must stop cleanly after epoch 1.
"""

import io
import json
import math
import os
import signal
import sys
from contextlib import redirect_stdout
from pathlib import Path

import torch

import kdtutor as kd

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import PER_RANK_BATCH, synthetic  # noqa: E402

torch.set_num_threads(1)
RANK = int(os.environ["RANK"])


class Recording(kd.Distillation):
    """Distillation that notes the sample indices of every step (what this rank trained on)."""

    def forward(self, out, batch, features=None):
        self.seen.append(batch.idx.tolist())
        return super().forward(out, batch, features)


class Faulty(torch.nn.Module):
    """An MLP that, on rank 1 only, returns NaN or presses Ctrl-C at its ``at``-th training call."""

    def __init__(self, fault: str, at: int):
        super().__init__()
        self.net, self.fault, self.at, self.calls = kd.MLP(in_features=20, hidden=(32,), num_classes=4), fault, at, 0

    def forward(self, x):
        out = self.net(x)
        if self.training and RANK == 1:
            self.calls += 1
            if self.calls == self.at and self.fault == "nan":
                return out * float("nan")
            if self.calls == self.at and self.fault == "interrupt":
                os.kill(os.getpid(), signal.SIGINT)
        return out


def main(folder: Path) -> None:
    train, val, logits = synthetic()
    result = {}

    torch.manual_seed(0)
    model = kd.MLP(in_features=20, hidden=(32,), num_classes=4)
    objective = Recording(teacher_logits=logits, temperature=2.0, alpha=0.5)
    objective.seen = []
    printed = io.StringIO()
    with redirect_stdout(printed):
        history = kd.fit(model, train, epochs=3, batch_size=PER_RANK_BATCH, lr=3e-3, loss=objective, val=val,
                         device="cpu")
    result["normal"] = {"history": history.as_dict(), "seen": objective.seen, "printed": printed.getvalue(),
                        "weights": [p.detach().flatten().tolist() for p in model.parameters()]}

    for fault in ("nan", "interrupt"):
        torch.manual_seed(0)
        # the fourth step of epoch 2: a check step (check_every=2), so only rank 1 has seen a bad loss by then
        model = Faulty(fault, at=math.ceil(len(train) / (2 * PER_RANK_BATCH)) + 4)
        try:
            history = kd.fit(model, train, epochs=3, batch_size=PER_RANK_BATCH, lr=3e-3, check_every=2,
                             verbose=False, device="cpu")
            result[fault] = {"raised": None, "epochs": len(history), "interrupted": history.interrupted}
        except FloatingPointError as err:
            result[fault] = {"raised": str(err), "epochs": len(err.history), "interrupted": err.history.interrupted}

    kd.save(model, folder / f"saved-by-rank{RANK}.pt")  # only rank 0 writes
    (folder / f"rank{RANK}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
