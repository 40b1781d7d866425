"""Rebuild Part V's shipped language models from scratch, deterministically, and record how.

    python scripts/train_lm.py                    # both, into kdtutor/models/weights/
    python scripts/train_lm.py lm_student_kjv     # one
    python scripts/train_lm.py --out DIR          # elsewhere (e.g. to compare with the shipped files)

``lm_teacher_kjv`` is the teacher: a 4-layer, 128-wide character transformer trained on the King James Version's
training text. ``lm_student_kjv`` is the student the chapters warm-start from: the same architecture, 2 layers and
64 wide, reading 64 characters (seven times fewer parameters), trained briefly on the same text — language-model
distillation starts from a pretrained student, so that a few hundred steps per arm measure distillation rather than
the first steps of learning to spell. ``RECIPES`` is the single source of truth (the record beside the weights
repeats it; a test checks the two agree). On the same CPU, torch version and thread count the weights come out bit-
identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import kdtutor as kd
from kdtutor import lm
from kdtutor.models import registry


@dataclass(frozen=True)
class Recipe:
    """How one shipped language model is built."""

    model: dict = field(default_factory=dict)  # CharTransformer's arguments (the vocabulary size is the corpus')
    steps: int = 3000          # AdamW steps
    batch: int = 32            # windows per step
    length: int = 128          # characters per window
    lr: float = 2e-3           # peak learning rate
    cosine: bool = True        # decay the learning rate to 0 along a half cosine, after the warm-up
    warmup: int = 100          # steps of linear warm-up
    seed: int = 0              # torch.manual_seed before the model is built, and the windows' generator
    threads: int = 2           # CPU threads; bit-identical weights need the same count

    def as_record(self) -> dict:
        return {"corpus": "kjv", "corpus_sha256": lm.KJV_SHA256, **asdict(self)}


RECIPES = {
    "lm_teacher_kjv": Recipe(model=dict(context=128, layers=4, width=128, heads=4), steps=3000),
    # A constant learning rate, so that the chapters continue its training where it stopped, at the same rate.
    "lm_student_kjv": Recipe(model=dict(context=64, layers=2, width=64, heads=4), steps=1000, length=64,
                             cosine=False, seed=1),
}


def build(name: str, recipe: Recipe, out: Path) -> None:
    torch.set_num_threads(recipe.threads)
    torch.use_deterministic_algorithms(True)
    corpus = lm.load_kjv()
    torch.manual_seed(recipe.seed)
    model = lm.CharTransformer(vocab_size=len(corpus.vocab), **recipe.model)
    history = lm.train(model, lambda g: lm.windows(corpus.train, recipe.batch, recipe.length, g), recipe.steps,
                       lr=recipe.lr, cosine=recipe.cosine, warmup=recipe.warmup, seed=recipe.seed)
    if history.interrupted:
        raise SystemExit("interrupted: nothing written")
    val, test = lm.bits_per_char(model, corpus.val), lm.bits_per_char(model, corpus.test)
    weights = kd.save(model, out / f"{name}.pt", recipe=recipe.as_record(), test_bits_per_char=test)
    every = max(1, recipe.steps // 100)
    record = registry.write_record(weights, f"python scripts/train_lm.py {name}", model, module="kdtutor.lm",
                                   recipe=recipe.as_record(), val_bits_per_char=round(val, 6),
                                   test_bits_per_char=round(test, 6), train_seconds=round(sum(history.seconds), 1),
                                   loss_every_step=every, loss=[round(x, 4) for x in history.train_loss[::every]])
    print(f"{name}: {kd.count_params(model):,} parameters, test {test:.3f} bits/char, val {val:.3f}, "
          f"{sum(history.seconds):.0f} s; wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB, "
          f"SHA-256 {record['sha256'][:12]}…)")


if __name__ == "__main__":
    registry.rebuild(__doc__, RECIPES, build)
