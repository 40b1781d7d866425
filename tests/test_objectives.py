"""The training loop with any objective: sequence outputs (B x T x V) and one printable TrainConfig.

The objectives themselves are tested in tests/methods/, one file per method module.
"""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import kdtutor as kd


class TinySequenceModel(nn.Module):
    """Predicts the next token of a sequence from the current one: logits of shape B x T x V."""

    def __init__(self, vocab=7):
        super().__init__()
        self.embed, self.head = nn.Embedding(vocab, 16), nn.Linear(16, vocab)

    def forward(self, x):
        return self.head(torch.relu(self.embed(x)))


def test_fit_trains_sequence_outputs_with_the_same_loop():
    """B x T x V outputs (a language model's shape) with B x T labels: the loop and accuracy need nothing else."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (256, 12), generator=g)
    data = TensorDataset(x, (x + 1) % 7)  # the next token is the current one plus one
    torch.manual_seed(0)
    model = TinySequenceModel()
    history = kd.fit(model, data, epochs=20, batch_size=64, lr=1e-2, device="cpu", verbose=False)
    assert history.train_acc[-1] > 0.99 and kd.evaluate(model, data) > 0.99


def test_train_config_is_one_printable_object_and_fit_uses_it(small):
    train, _ = small
    cfg = kd.TrainConfig(epochs=2, batch_size=1000, lr=5e-3, optimizer="sgd", momentum=0.0, schedule="constant")
    assert "epochs=2" in repr(cfg) and cfg.as_record()["optimizer"] == "sgd"
    history = kd.fit(kd.MLP(hidden=(8,)), train, cfg, device="cpu", verbose=False)
    assert len(history) == 2 and history.lr == [5e-3, 5e-3]
    overridden = kd.fit(kd.MLP(hidden=(8,)), train, cfg, epochs=1, device="cpu", verbose=False)
    assert len(overridden) == 1  # a keyword overrides the config's field
    with pytest.raises(TypeError, match="config: expected a TrainConfig"):
        kd.fit(kd.MLP(), train, {"epochs": 1})
