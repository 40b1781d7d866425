"""Mistakes with the training loops (``kd.fit``, its objectives and settings, ``kdtutor.lm``): one row per mistake —
the input, the exception it must raise, a fragment of its message (as in ``test_bad_input.py``).

Each names the argument, what was expected and what was given, instead of a message from inside PyTorch; a run
that fails because of NaN in its inputs or its teacher's features says so, naming the sample, rather than advising
a lower learning rate.
"""

import importlib.util

import pytest
import torch
from conftest import assert_clear_error, quick_fit
from torch import nn
from torch.utils.data import TensorDataset

import kdtutor as kd
from kdtutor import lm
from kdtutor.training import DecoupledKD, FitNets, LearningWithoutForgetting, Sum

G = torch.Generator().manual_seed(0)
X, Y = torch.randn(64, 1, 28, 28, generator=G), torch.randint(0, 10, (64,), generator=G)
DATA = TensorDataset(X, Y)
IDS = torch.randint(11, (3, 9), generator=G)  # a batch of character ids: 3 rows of 8 inputs + 1 target


def mlp(**kwargs):
    torch.manual_seed(0)
    return kd.MLP(hidden=(8,), **kwargs)


def tiny():
    torch.manual_seed(0)
    return lm.CharTransformer(vocab_size=11, context=16, layers=1, width=8, heads=2)


def fit(**kwargs):
    return quick_fit(kwargs.pop("model", None) or mlp(), kwargs.pop("data", DATA), **kwargs)


class IntegerWeight(nn.Module):
    """A model holding a non-floating-point parameter (as a hand-quantized model would)."""

    def __init__(self):
        super().__init__()
        self.net = mlp()
        self.codes = nn.Parameter(torch.zeros(3, dtype=torch.int8), requires_grad=False)

    def forward(self, x):
        return self.net(x)


def int8_model():
    return kd.compression.int8_linear(mlp())


def with_nan_image(i=37):
    x = X.clone()
    x[i, 0, 3, 5] = float("nan")
    return TensorDataset(x, Y)


def nan_features_run():
    """A fresh model and objective on every call: the rows share nothing."""
    features = torch.randn(64, 4, 7, 7, generator=torch.Generator().manual_seed(1))
    features[21, 1] = float("inf")
    cnn = kd.CNN(channels=(2, 4), hidden=0)
    loss = Sum(kd.CrossEntropy(), FitNets({"block": features}, {"features.7": "block"}))
    return fit(model=cnn, loss=loss, check_every=1)


class InfOnSample(nn.Module):
    """A teacher whose logits are infinite for one training sample (recognised by its pixel value)."""

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        out[x[:, 0, 0, 0] == 42.0, 3] = float("inf")
        return out


def inf_teacher_run():
    x = X.clone()
    x[11, 0, 0, 0] = 42.0
    return fit(data=TensorDataset(x, Y), teacher=InfOnSample(), batch_size=64, check_every=1, online=True)


def inf_teacher_pass():
    x = X.clone()
    x[11, 0, 0, 0] = 42.0
    return fit(data=TensorDataset(x, Y), teacher=InfOnSample(), batch_size=64)


NEEDS_TORCHAO = {"int8_linear's model"}  # an optional dependency (the compress extra)

CASES = [
    # settings: flags are booleans (a string such as "false" is truthy)
    ("amp='false'", lambda: kd.TrainConfig(amp="false"), ValueError, "amp: expected True or False, got 'false'"),
    ("amp=1", lambda: fit(amp=1), ValueError, "amp: expected True or False, got 1"),
    ("channels_last='no'", lambda: kd.TrainConfig(channels_last="no"), ValueError,
     "channels_last: expected True, False or 'auto', got 'no'"),
    # a class where an instance is expected
    ("loss is the class Distillation", lambda: kd.fit(mlp(), DATA, loss=kd.Distillation), TypeError,
     "loss: expected an Objective instance such as kd.CrossEntropy() or kd.Distillation(...), got the class "
     "Distillation itself"),
    ("model is the class MLP", lambda: kd.fit(kd.MLP, DATA, epochs=1), TypeError,
     "model: expected an nn.Module instance, got the class MLP itself"),
    ("teacher is the class MLP", lambda: fit(teacher=kd.MLP), TypeError,
     "teacher: expected an nn.Module instance, got the class MLP itself"),
    ("Distillation(teacher=the class)", lambda: kd.Distillation(teacher=kd.CNN), TypeError,
     "teacher: expected an nn.Module instance, got the class CNN itself"),
    ("config is the class TrainConfig", lambda: kd.fit(mlp(), DATA, kd.TrainConfig), TypeError,
     "config: expected a TrainConfig instance, got the class TrainConfig itself"),
    ("Sum of a class", lambda: Sum(kd.CrossEntropy, kd.Distillation(teacher=mlp())), TypeError,
     "terms: expected Objective instances, got the class(es) ['CrossEntropy'] themselves"),
    # models fit cannot train
    ("a model with an int8 parameter", lambda: fit(model=IntegerWeight()), ValueError,
     "model: expected floating-point nn.Parameter weights, got 1 parameter(s) of another kind, e.g. 'codes'"),
    ("int8_linear's model", lambda: fit(model=int8_model()), ValueError,
     "a quantized model (such as kdtutor.compression.int8_linear's) cannot be trained; train the float model first"),
    # objectives
    ("DecoupledKD on one class", lambda: fit(model=mlp(num_classes=1), data=TensorDataset(X, torch.zeros_like(Y)),
                                             loss=DecoupledKD(teacher=mlp(num_classes=1))), ValueError,
     "model: DecoupledKD splits the classes into the target and the others, so it needs at least 2 outputs, got a "
     "model with 1"),
    ("LwF old_classes='012'", lambda: LearningWithoutForgetting("012", teacher=mlp(num_classes=3)), TypeError,
     "old_classes: expected a sequence of integer class indices such as [0, 1, 2] (the student's class of each old "
     "output), got '012'"),
    ("LwF old_classes=None", lambda: LearningWithoutForgetting(None, teacher=mlp(num_classes=3)), TypeError,
     "old_classes: expected a sequence of integer class indices"),
    # non-finite inputs are named, not blamed on the learning rate
    ("a NaN image", lambda: fit(data=with_nan_image(37), check_every=1), FloatingPointError,
     "train: sample 37 (its index in the training set) holds NaN or infinite values: the inputs are the cause"),
    ("an infinite cached teacher feature", nan_features_run, FloatingPointError,
     "teacher_features: 'block' holds NaN or infinite values for sample 21 (its index in the training set)"),
    ("a teacher infinite on one sample", inf_teacher_run, FloatingPointError,
     "the teacher's logits on the last batch are NaN or infinite (first for sample 11, its index in the training"),
    ("a teacher infinite on one sample, run once", inf_teacher_pass, ValueError,  # before any step
     "teacher: its logits are NaN or infinite for 1 training sample(s), the first being sample 11 (its index"),
    ("online='yes'", lambda: kd.Distillation(mlp(), online="yes"), ValueError,
     "online: expected True or False, got 'yes'"),
    ("online with cached logits", lambda: fit(teacher_logits=torch.zeros(len(Y), 10), online=False), ValueError,
     "online: says when a teacher model runs; cached teacher_logits have no teacher to run"),
    # kdtutor.lm: TokenKD
    ("TokenKD(divergence='backward')", lambda: lm.TokenKD(tiny(), "backward"), ValueError,
     "divergence: expected a function or one of ['forward', 'reverse', 'jsd'], got 'backward'"),
    ("TokenKD(divergence=2.0)", lambda: lm.TokenKD(tiny(), 2.0), TypeError,
     "divergence: expected a function such as kdtutor.losses.forward_kl or one of ['forward', 'reverse', 'jsd'], "
     "got float"),
    ("TokenKD of a teacher class", lambda: lm.TokenKD(lm.CharTransformer), TypeError,
     "teacher: expected an nn.Module instance, got the class CharTransformer itself"),
    ("TokenKD(prompt=-1)", lambda: lm.TokenKD(tiny(), prompt=-1), ValueError,
     "prompt: expected an integer >= 0 (the prompt ids at the start of each row), got -1"),
    ("TokenKD(pad_id='0')", lambda: lm.TokenKD(tiny(), pad_id="0"), ValueError,
     "pad_id: expected an integer id or None, got '0'"),
    ("TokenKD with a prompt as long as the rows", lambda: lm.TokenKD(tiny(), prompt=10)(tiny()(IDS[:, :-1]), IDS),
     ValueError, "batch: no position left to score (prompt=10, pad_id=None) in a batch of shape (3, 9)"),
    ("fit(history=a dict)", lambda: fit(history={}), TypeError,
     "history: expected a kdtutor History (e.g. the one an earlier fit returned) or None, got dict"),
    # kdtutor.lm: models, not classes
    ("generate with a model class", lambda: lm.generate(lm.CharTransformer, IDS, 2), TypeError,
     "model: expected an nn.Module instance, got the class CharTransformer itself"),
    ("bits_per_char of a model class", lambda: lm.bits_per_char(lm.CharTransformer, IDS[0]), TypeError,
     "model: expected an nn.Module instance, got the class CharTransformer itself"),
    ("kl_to_teacher with a teacher class", lambda: lm.kl_to_teacher(lm.CharTransformer, tiny(), IDS[0]), TypeError,
     "teacher: expected an nn.Module instance, got the class CharTransformer itself"),
    # kdtutor.lm: train
    ("lm.train(history=[])", lambda: lm.train(tiny(), lambda g: IDS, 1, history=[]), TypeError,
     "history: expected a kdtutor History (e.g. the one an earlier train returned) or None, got list"),
    ("lm.train of a model class", lambda: lm.train(lm.CharTransformer, lambda g: IDS, 1), TypeError,
     "model: expected an nn.Module instance, got the class CharTransformer itself"),
    ("lm.train with a tensor for batches", lambda: lm.train(tiny(), IDS, 1), TypeError,
     "batches: expected a function of a torch.Generator returning (B, L + 1) ids"),
    ("lm.train with loss=the class TokenKD", lambda: lm.train(tiny(), lambda g: IDS, 1, loss=lm.TokenKD), TypeError,
     "loss: expected a loss function or object, got the class TokenKD itself; create it first, e.g. TokenKD(teacher)"),
]


@pytest.mark.parametrize("case, call, exception, fragment", [
    pytest.param(*c, id=c[0], marks=pytest.mark.skipif(c[0] in NEEDS_TORCHAO and not importlib.util.find_spec(
        "torchao"), reason="needs torchao")) for c in CASES])
def test_bad_training_input_gets_a_clear_error(case, call, exception, fragment):
    assert_clear_error(case, call, exception, fragment)


@pytest.mark.parametrize("case", ["a NaN image", "an infinite cached teacher feature", "a teacher infinite on one "
                                  "sample"])
def test_a_named_cause_replaces_the_learning_rate_advice(case):
    call = next(c[1] for c in CASES if c[0] == case)
    with pytest.raises(FloatingPointError) as err:
        call()
    assert "learning rate" not in str(err.value).replace("not the learning rate", "")
    assert err.value.history is not None
