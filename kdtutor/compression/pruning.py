"""Pruning: zero the smallest weights (unstructured), or remove whole channels so the layers really shrink.

**Unstructured magnitude pruning** (Han et al. 2015) sets the fraction ``ratio`` of weights with the smallest
:math:`|w|` to zero, ranked over all convolution and linear weights together (global ranking, through
:func:`torch.nn.utils.prune.global_unstructured` with L1 magnitude, then :func:`torch.nn.utils.prune.remove` to make
the zeros permanent). The tensors keep their shapes: the model is no smaller on disk until the file is compressed,
and no faster on a CPU, whose dense kernels multiply zeros as fast as anything else.

**Structured (channel) pruning** (Li et al. 2017) removes whole output channels of a convolution, and with them the
matching BatchNorm entries and input channels of the next layer; the layers become narrower dense layers, so the model
is smaller and faster everywhere. :func:`~kdtutor.compression.prune_channels` lets **torch-pruning** (Fang et al. 2023)
find those coupled groups of parameters and rank each group by the L2 norm of its weights; for kdtutor's
:class:`~kdtutor.models.CNN` the result is rebuilt as a ``CNN`` with the narrower widths, so that
:func:`kdtutor.checkpoint.save` and :func:`kdtutor.checkpoint.load` (``weights_only=True``) handle it like any other
model.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import prune

from kdtutor import checks
from kdtutor.models import CNN

__all__ = ["prunable", "prune_channels", "prune_magnitude", "sparsity"]


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(name, layer)`` pairs whose weights pruning acts on: every ``nn.Conv2d`` and ``nn.Linear``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> dict[str, float]:
    """The fraction of weights that are exactly zero, per prunable layer and ``"total"`` over all of them."""
    report, zeros, total = {}, 0, 0
    for name, layer in prunable(model):
        w = layer.weight.detach()
        z = int((w == 0).sum())
        report[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    report["total"] = zeros / total if total else 0.0
    return report


def _ratio(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1), got {value!r}")
    return float(value)


def prune_magnitude(model: nn.Module, ratio: float) -> nn.Module:
    """A copy of ``model`` with the fraction ``ratio`` of its conv and linear weights (smallest :math:`|w|`) zeroed.

    Global ranking over all those layers (a layer with many small weights loses more), biases kept; the pruning
    masks are removed afterwards, so the copy's ``state_dict`` has the original names and shapes.
    """
    ratio = _ratio(ratio, "ratio")
    checks.nn_module("model", model)
    pruned = copy.deepcopy(model)
    layers = [(layer, "weight") for _, layer in prunable(pruned)]
    if not layers:
        raise ValueError(f"model: a {type(model).__name__} has no nn.Conv2d or nn.Linear layer to prune")
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=ratio)
    for layer, attr in layers:
        prune.remove(layer, attr)
    return pruned


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor | None = None) -> nn.Module:
    r"""A copy of ``model`` with the fraction ``ratio`` of channels (and hidden units) removed from every layer.

    torch-pruning's ``MagnitudePruner`` with ``MagnitudeImportance(p=2)`` traces ``model(example)`` to find the
    coupled parameters, ranks each channel by the L2 norm of its group's weights and removes the weakest ``ratio``
    of each layer; the last linear layer keeps its outputs (the classes). ``example`` is a batch of inputs of the
    model's shape (two images of zeros for a :class:`~kdtutor.models.CNN` when omitted). A ``CNN`` comes back as a
    ``CNN`` with the new widths in its ``config`` (its outputs equal the pruned network's); another model comes back
    as the pruned module itself, which :func:`kdtutor.checkpoint.save` cannot rebuild from a file.

    A layer of :math:`C` channels keeps :math:`\lfloor C(1 - \text{ratio}) \rfloor` of them (torch-pruning's
    rule), so widths, and the parameter count, shrink monotonically as ``ratio`` grows. A ratio that would leave some
    layer with no channel is refused (``ValueError`` naming the layer and the largest ratio every layer can take):
    torch-pruning would silently leave such a layer unpruned, and a larger ratio could then give a larger model.
    """
    ratio = _ratio(ratio, "ratio")
    checks.nn_module("model", model)
    if example is None:
        if not isinstance(model, CNN):
            raise ValueError(f"example: a {type(model).__name__} needs an example input batch to trace")
        c = model.config
        example = torch.zeros(2, c["in_channels"], c["image_size"], c["image_size"])
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example: expected a tensor batch of inputs of the model's shape, got "
                        f"{type(example).__name__}")
    tp = _torch_pruning()
    linears = [m for _, m in prunable(model) if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model: a {type(model).__name__} has no nn.Linear output layer to keep")
    pruned = copy.deepcopy(model).eval()
    device = next(pruned.parameters()).device
    head = [m for _, m in prunable(pruned) if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MagnitudePruner(pruned, example.to(device), importance=tp.importance.MagnitudeImportance(p=2),
                                       pruning_ratio=ratio, ignored_layers=[head])
    _check_widths(pruner, pruned, ratio)
    pruner.step()
    pruned.train(model.training)
    return _as_cnn(pruned) if isinstance(model, CNN) else pruned


def _kept(channels: int, ratio: float) -> int:
    """How many of ``channels`` torch-pruning keeps at ``ratio`` (its local-pruning rule, float arithmetic and all)."""
    return int(channels * (1 - ratio))


def _check_widths(pruner, model: nn.Module, ratio: float) -> None:
    """Refuse a ratio that would leave a layer torch-pruning is about to prune without a single channel."""
    names = {m: name for name, m in model.named_modules()}
    widths = {}
    for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                          root_module_types=pruner.root_module_types):
        layer = group[0].dep.target.module
        channels = pruner.DG.get_out_channels(layer)
        if channels is not None:
            widths[names.get(layer, type(layer).__name__)] = channels
    order = {name: i for i, name in enumerate(names.values())}  # the model's own order, not torch-pruning's
    empty = [f"{name} ({c} channels)" for name, c in sorted(widths.items(), key=lambda kv: order.get(kv[0], len(order)))
             if _kept(c, ratio) < 1]
    if empty:
        largest = math.floor((1 - 1 / min(widths.values())) * 1000) / 1000
        while largest > 0 and _kept(min(widths.values()), largest) < 1:
            largest = round(largest - 0.001, 3)
        raise ValueError(f"ratio: {ratio} would leave no channel in {', '.join(empty)} (a layer of C channels keeps "
                         f"int(C * (1 - ratio))); every layer can take a ratio of at most {largest}")


def _as_cnn(pruned: CNN) -> CNN:
    """The pruned ``CNN`` rebuilt as a fresh ``CNN`` with the pruned widths, carrying the pruned weights."""
    convs = [m for m in pruned.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in pruned.classifier if isinstance(m, nn.Linear)]
    config = dict(pruned.config, channels=tuple(m.out_channels for m in convs),
                  hidden=linears[0].out_features if pruned.config["hidden"] else 0)
    rebuilt = CNN(**config).to(next(pruned.parameters()).device)
    rebuilt.load_state_dict(pruned.state_dict())
    return rebuilt.train(pruned.training)


def _torch_pruning():
    try:
        import torch_pruning
    except ImportError as err:  # an optional dependency: the compress extra
        raise ImportError("prune_channels needs torch-pruning: pip install 'kdtutor[compress]'") from err
    return torch_pruning
