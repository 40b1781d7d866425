"""kdtutor.lm: the corpus, the character transformer, windows, sampling, training and the metrics."""

import copy
import hashlib
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kdtutor as kd
from kdtutor import lm
from kdtutor.losses import forward_kl, generalized_jsd, reverse_kl
from kdtutor.models import registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus():
    return lm.load_kjv()


def tiny(**kw):
    torch.manual_seed(0)
    return lm.CharTransformer(**{"vocab_size": 11, "context": 16, "layers": 2, "width": 16, "heads": 2, **kw})


# --- the corpus ----------------------------------------------------------------------------------------------------

def test_corpus_is_the_verified_kjv_split_by_position(corpus):
    assert len(corpus.text) == 4_137_850 and len(corpus.vocab) == 63
    assert hashlib.sha256(corpus.text.encode()).hexdigest() == lm.KJV_SHA256
    assert corpus.text.startswith("In the beginning God created the heaven and the earth.\n")
    assert corpus.text.endswith("The grace of our Lord Jesus Christ be with you all. Amen.\n")
    assert not re.search(r"\d", corpus.text)  # the verse references are stripped
    n = len(corpus.text)
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (int(0.9 * n), int(0.95 * n) - int(0.9 * n),
                                                                      n - int(0.95 * n))
    joined = torch.cat([corpus.train, corpus.val, corpus.test])
    assert corpus.decode(joined[:60]) == corpus.text[:60] and corpus.decode(joined[-60:]) == corpus.text[-60:]
    assert corpus.decode(corpus.val[:5]) == corpus.text[int(0.9 * n):int(0.9 * n) + 5]


def test_corpus_from_a_file_is_checked(tmp_path, monkeypatch, corpus):
    good = tmp_path / "kjv.txt"
    good.write_text(corpus.text, encoding="utf-8")
    assert lm.kjv_text(good) == corpus.text
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    assert lm.kjv_text() == corpus.text
    bad = tmp_path / "short.txt"
    bad.write_text(corpus.text[:-10], encoding="utf-8")
    with pytest.raises(ValueError, match="short.txt: its text has SHA-256 .* truncated or altered"):
        lm.kjv_text(bad)


def test_missing_corpus_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KDTUTOR_DATA", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(lm.CorpusNotFoundError, match=r"(?s)kjv.txt \(not found\).*bible-kjv \(not installed\)"
                                                     r".*apt-get install bible-kjv"):
        lm.kjv_text()
    with pytest.raises(lm.CorpusNotFoundError, match=r"path: expected the corpus' text file, got .*nothing.txt"):
        lm.kjv_text(tmp_path / "nothing.txt")  # a file asked for by name is never replaced by another source


def test_a_failing_bible_program_is_reported(tmp_path, monkeypatch):
    fake = tmp_path / "bible"
    fake.write_text("#!/bin/sh\necho broken data file >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.delenv("KDTUTOR_DATA", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: str(fake))
    with pytest.raises(lm.CorpusNotFoundError, match="failed with exit status 3: broken data file"):
        lm.kjv_text()


def test_corpus_command_writes_the_text(tmp_path, corpus):
    out = tmp_path / "kjv.txt"
    done = subprocess.run([sys.executable, "-m", "kdtutor", "corpus", "--write", str(out)], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == corpus.text and "4,137,850" in done.stdout


def test_encode_decode_round_trip_and_unknown_characters():
    c = lm.Corpus("abc ab\n" * 30)
    assert c.vocab == "\n abc" and c.decode(c.encode("cab a")) == "cab a"
    assert c.encode("cab").dtype == torch.uint8
    with pytest.raises(ValueError, match="character 'z' is not in"):
        c.encode("abz")


# --- the model -----------------------------------------------------------------------------------------------------

def test_transformer_is_causal():
    """Changing the input at position k changes no logit before k, and does change logits from k on."""
    model = tiny().eval()
    ids = torch.randint(11, (3, 16), generator=torch.Generator().manual_seed(1))
    other = ids.clone()
    other[:, 9] = (other[:, 9] + 1) % 11
    for grad in (True, False):  # without gradients, attention may take PyTorch's fused path
        with torch.set_grad_enabled(grad):
            a, b = model(ids), model(other)
        assert a.shape == (3, 16, 11)
        torch.testing.assert_close(a[:, :9], b[:, :9], rtol=0, atol=1e-6)
        assert (a[:, 9:] - b[:, 9:]).abs().amax() > 1e-3


def test_shorter_window_gives_the_same_logits():
    model = tiny().eval()
    ids = torch.randint(11, (2, 16), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(ids[:, :7]), model(ids)[:, :7], rtol=1e-5, atol=1e-5)


def test_transformer_rebuilds_from_a_checkpoint(tmp_path):
    model = tiny(dropout=0.1)
    kd.save(model, tmp_path / "m.pt")
    loaded, _ = kd.load(tmp_path / "m.pt")
    assert type(loaded) is lm.CharTransformer and loaded.config == model.config
    ids = torch.randint(11, (2, 5))
    torch.testing.assert_close(loaded.eval()(ids), model.eval()(ids))


@pytest.mark.parametrize("kw, match", [
    (dict(width=15), "heads: expected a divisor of width 15"),
    (dict(layers=0), "layers: expected a positive integer"),
    (dict(dropout=1.5), r"dropout: expected a number in \[0, 1\]"),
])
def test_bad_transformer_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_bad_ids_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match=r"ids: expected a length from 1 to the context 16, got 17"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="ids: expected integer ids of shape"):
        model(torch.zeros(1, 4))
    vocab = model.config["vocab_size"]
    for bad in (vocab, -1):  # nn.Embedding would fail with an index error, on CUDA a device-side assert
        with pytest.raises(ValueError, match=rf"ids: expected ids from 0 to vocab_size - 1 = {vocab - 1}, got ids "):
            model(torch.tensor([[0, bad]]))


# --- windows and sampling ------------------------------------------------------------------------------------------

def test_windows_are_slices_of_the_text_shifted_by_one():
    ids = torch.arange(100, dtype=torch.uint8)
    rows = lm.windows(ids, 8, 10, torch.Generator().manual_seed(0))
    assert rows.shape == (8, 11) and rows.dtype == torch.int64
    assert ((rows[:, 1:] - rows[:, :-1]) == 1).all() and rows.max() <= 99
    again = lm.windows(ids, 8, 10, torch.Generator().manual_seed(0))
    assert torch.equal(rows, again)
    with pytest.raises(ValueError, match="ids: expected a 1-D tensor longer than length 100"):
        lm.windows(ids, 2, 100)


def test_generate_is_seeded_and_follows_top_k():
    model = tiny()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = lm.generate(model, prompt, 20, generator=torch.Generator().manual_seed(0))
    b = lm.generate(model, prompt, 20, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 23) and torch.equal(a, b) and torch.equal(a[:, :3], prompt) and model.training
    greedy = lm.generate(model, prompt, 20, top_k=1)  # top-1 sampling is the argmax, step by step
    ids = prompt
    for _ in range(20):
        ids = torch.cat([ids, model.eval()(ids[:, -16:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(greedy, ids)


def test_generate_draws_from_the_softmax_at_temperature():
    """With a model whose next-id logits are fixed, the sampled frequencies match softmax(z / T)."""

    class Fixed(torch.nn.Module):
        config = {"context": 4}

        def __init__(self):
            super().__init__()
            self.z = torch.tensor([0.0, 1.0, 2.0, -1.0])

        def forward(self, ids):
            return self.z.expand(ids.shape[0], ids.shape[1], 4)

    out = lm.generate(Fixed(), torch.zeros(20000, 1, dtype=torch.long), 1, temperature=2.0,
                      generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[:, 1], minlength=4).float() / 20000
    torch.testing.assert_close(freq, torch.softmax(Fixed().z / 2, 0), atol=0.01, rtol=0)
    top2 = lm.generate(Fixed(), torch.zeros(2000, 1, dtype=torch.long), 1, top_k=2)
    assert set(top2[:, 1].tolist()) == {1, 2}


def test_on_policy_batches_are_the_models_own_continuations_of_corpus_prompts():
    text = torch.arange(11, dtype=torch.uint8).repeat(20)
    model = tiny()
    batches = lm.on_policy(model, text, batch_size=3, prompt=5, length=7)
    rows = batches(torch.Generator().manual_seed(0))
    assert rows.shape == (3, 12) and ((rows[:, 1:5] - rows[:, :4]) % 11 == 1).all()  # prompts: slices of the text
    g = torch.Generator().manual_seed(0)
    prompts = lm.windows(text, 3, 4, g)
    assert torch.equal(rows, lm.generate(model, prompts, 7, generator=g))  # then the model's own samples
    assert lm.on_policy(model, text, 2, 1, 3)(torch.Generator()).shape == (2, 4)
    with pytest.raises(ValueError, match="prompt: expected a positive integer"):
        lm.on_policy(model, text, 2, 0, 3)


def test_bad_sampling_arguments():
    with pytest.raises(ValueError, match="temperature: expected a positive finite number"):
        lm.generate(tiny(), torch.zeros(1, 1, dtype=torch.long), 3, temperature=0)
    with pytest.raises(ValueError, match="top_k: expected a positive integer"):
        lm.generate(tiny(), torch.zeros(1, 1, dtype=torch.long), 3, top_k=0)


# --- training ------------------------------------------------------------------------------------------------------

def test_training_learns_a_periodic_text():
    text = torch.tensor(list(range(11)) * 40, dtype=torch.uint8)
    model = tiny()
    before = lm.bits_per_char(model, text, length=16)
    history = lm.train(model, lambda g: lm.windows(text, 16, 16, g), 150, lr=3e-3)
    assert len(history) == len(history.train_loss) == 150 and not history.interrupted and sum(history.seconds) > 0
    assert before > 3 and lm.bits_per_char(model, text, length=16) < 0.5  # log2(11) = 3.46 at chance


def test_training_is_seeded():
    text = torch.randint(11, (500,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    runs = []
    for seed in (3, 3, 4):
        model = tiny(dropout=0.1)
        lm.train(model, lambda g: lm.windows(text, 4, 16, g), 5, seed=seed)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])
    assert not all(torch.equal(runs[0][key], runs[2][key]) for key in runs[0])  # the seed is used


def test_ctrl_c_keeps_the_model_and_its_history():
    text = torch.randint(11, (500,), dtype=torch.uint8)
    calls = []

    def batches(g):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return lm.windows(text, 4, 16, g)

    model = tiny()
    before = copy.deepcopy(model.state_dict())
    history = lm.train(model, batches, 10)
    assert history.interrupted and len(history) == 3
    assert not torch.equal(before["head.weight"], model.head.weight)  # the three updates are kept


def test_cosine_schedule_with_warmup_and_bad_arguments():
    text = torch.randint(11, (500,), dtype=torch.uint8)
    model = tiny()
    lrs = []
    original = torch.optim.AdamW.step

    def spy(self, *a, **k):
        lrs.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", spy)
        lm.train(model, lambda g: lm.windows(text, 2, 16, g), 6, lr=1.0, cosine=True, warmup=2)
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx(expected)
    with pytest.raises(ValueError, match="warmup: expected an integer from 0 to steps - 1 = 5"):
        lm.train(model, lambda g: None, 6, warmup=6)
    with pytest.raises(ValueError, match="steps: expected a positive integer"):
        lm.train(model, lambda g: None, 0)
    with pytest.raises(ValueError, match="clip: expected a positive finite number"):
        lm.train(model, lambda g: None, 3, clip=0)


def test_a_loss_that_blows_up_names_the_step():
    text = torch.randint(11, (500,), dtype=torch.uint8)
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1, step 1"):  # one step per epoch
        lm.train(tiny(), lambda g: lm.windows(text, 2, 16, g), 3, loss=lambda z, b: z.sum() * math.nan)


@pytest.mark.parametrize("divergence", [forward_kl, reverse_kl, lambda s, t, temperature: generalized_jsd(
    s, t, temperature=temperature, beta=0.5)])
def test_token_kd_matches_the_divergence_and_cross_entropy(divergence):
    teacher, student = tiny(), tiny(width=8)
    batch = torch.randint(11, (3, 9))
    z = student(batch[:, :-1])
    kd_loss = lm.TokenKD(teacher, divergence, temperature=2.0, alpha=0.75)(z, batch)
    v = teacher.eval()(batch[:, :-1])
    ce = F.cross_entropy(z.reshape(-1, 11), batch[:, 1:].reshape(-1))
    torch.testing.assert_close(kd_loss, 0.75 * divergence(z, v, temperature=2.0) + 0.25 * ce)
    torch.testing.assert_close(lm.cross_entropy(z, batch), ce)


def test_token_kd_forward_kl_by_hand():
    """alpha = 1, T = 1: the mean over positions of sum_i p_i log(p_i / q_i), written out in float64."""
    teacher, student = tiny(), tiny(width=8)
    batch = torch.randint(11, (2, 6))
    z = student(batch[:, :-1])
    p = torch.softmax(teacher.eval()(batch[:, :-1]).double(), -1)
    q = torch.softmax(z.double(), -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean()
    assert lm.TokenKD(teacher)(z, batch).item() == pytest.approx(expected.item(), rel=1e-5)


# --- metrics -------------------------------------------------------------------------------------------------------

def test_bits_per_char_is_the_cross_entropy_in_bits_over_non_overlapping_windows():
    model = tiny().eval()
    ids = torch.randint(11, (70,), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    nats, count = 0.0, 0
    for start in range(0, 64, 16):  # (70 - 1) // 16 = 4 windows of 16 predictions each
        x, y = ids[start:start + 16].long(), ids[start + 1:start + 17].long()
        nats += F.cross_entropy(model(x[None])[0].double(), y, reduction="sum").item()
        count += 16
    assert lm.bits_per_char(model, ids, batch_size=3) == pytest.approx(nats / count / math.log(2), rel=1e-5)
    assert lm.bits_per_char(model, ids, max_chars=32) == pytest.approx(
        lm.bits_per_char(model, ids[:33]), rel=1e-6)


def test_uniform_model_costs_log2_vocab_bits():
    model = tiny()
    torch.nn.init.zeros_(model.head.weight), torch.nn.init.zeros_(model.head.bias)
    ids = torch.randint(11, (200,), dtype=torch.uint8)
    assert lm.bits_per_char(model, ids) == pytest.approx(math.log2(11), rel=1e-6)
    assert lm.kl_to_teacher(model, model, ids) == pytest.approx(0.0, abs=1e-7)


def test_kl_to_teacher_is_the_mean_kl_in_bits():
    teacher, student = tiny().eval(), tiny(width=8).eval()
    ids = torch.randint(11, (33,), dtype=torch.uint8)
    x = torch.stack([ids[:16], ids[16:32]]).long()
    p, q = torch.softmax(teacher(x).double(), -1), torch.softmax(student(x).double(), -1)
    expected = (p * (p.log() - q.log())).sum(-1).mean().item() / math.log(2)
    assert lm.kl_to_teacher(teacher, student, ids) == pytest.approx(expected, rel=1e-5)


def test_sample_bits_scores_only_the_generated_part():
    teacher = tiny().eval()
    samples = torch.randint(11, (4, 10))
    logits = teacher(samples[:, :-1]).double()
    expected = F.cross_entropy(logits[:, 3:].reshape(-1, 11), samples[:, 4:].reshape(-1)).item() / math.log(2)
    assert lm.sample_bits(teacher, samples, prompt_length=4) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="prompt_length: expected 1 to 9, got 10"):
        lm.sample_bits(teacher, samples, prompt_length=10)
    with pytest.raises(ValueError, match=r"samples: expected ids of shape \(batch, 2 to the teacher's context"):
        lm.sample_bits(teacher, torch.randint(11, (2, 18)), prompt_length=4)  # context 16: 17 ids at most


@pytest.mark.parametrize("kw, match", [
    (dict(length=0), "length: expected a positive integer"),
    (dict(batch_size=0), "batch_size: expected a positive integer"),
    (dict(max_chars=0), "max_chars: expected a positive integer"),
])
def test_bad_metric_arguments(kw, match):
    ids = torch.randint(11, (100,), dtype=torch.uint8)
    with pytest.raises(ValueError, match=match):
        lm.bits_per_char(tiny(), ids, **kw)
    with pytest.raises(ValueError, match=match):
        lm.kl_to_teacher(tiny(), tiny(), ids, **kw)


def test_distinct_ngrams():
    assert lm.distinct_ngrams(["abcdef"], n=4) == 1.0
    assert lm.distinct_ngrams(["aaaaaaa"], n=4) == 0.25  # 4 four-grams, all "aaaa"
    assert lm.distinct_ngrams(["abcd", "abcd"], n=4) == 0.5
    with pytest.raises(ValueError, match="texts: expected at least one text of 4"):
        lm.distinct_ngrams(["abc"])


# --- shipped models ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", lm.SHIPPED)
def test_shipped_language_model_matches_its_record(name, corpus):
    record = registry.record(name)
    assert record["module"] == "kdtutor.lm" and record["recipe"]["corpus_sha256"] == lm.KJV_SHA256
    assert record["size_bytes"] <= 5_000_000
    model = lm.pretrained(name)
    assert isinstance(model, lm.CharTransformer) and not model.training
    assert model.config["vocab_size"] == len(corpus.vocab)
    assert lm.bits_per_char(model, corpus.test) == pytest.approx(record["test_bits_per_char"], abs=2e-3)


def test_shipped_teacher_is_better_and_larger_than_the_student():
    teacher, student = registry.record("lm_teacher_kjv"), registry.record("lm_student_kjv")
    assert teacher["parameters"] >= 4 * student["parameters"]
    assert teacher["test_bits_per_char"] < student["test_bits_per_char"] - 0.3


def test_shipped_language_model_loads_in_a_fresh_process():
    """kdtutor.models.pretrained imports kdtutor.lm itself (the record's module), so the architecture is known."""
    code = ("import sys; from kdtutor.models import pretrained; assert 'kdtutor.lm' not in sys.modules; "
            "m = pretrained('lm_student_kjv'); print(type(m).__module__, type(m).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kdtutor.lm", "CharTransformer"]


def test_pretrained_names_the_choices():
    with pytest.raises(ValueError, match="name: expected one of .*lm_teacher_kjv"):
        lm.pretrained("teacher_fmnist")


def test_config_object_or_keywords_not_both():
    cfg = lm.LMConfig(vocab_size=11, context=16, layers=1, width=8, heads=2)
    assert lm.CharTransformer(cfg).config == lm.CharTransformer(**lm.CharTransformer(cfg).config).config
    with pytest.raises(ValueError, match="fields: expected either config or keywords, got both"):
        lm.CharTransformer(cfg, layers=2)


# --- issue 28: lost work, a teacher in train mode, scored positions -------------------------------------------------

def test_a_diverging_run_restores_the_weights_from_before_the_failing_step_like_fit():
    """lr=1e6 diverges: the error carries the history, the model is in eval mode with the weights from before the
    step that failed (fit's epoch: lm.train gives it one step)."""
    text = torch.randint(11, (500,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    model, start = tiny(), tiny().state_dict()
    with pytest.raises(FloatingPointError, match="The model is back at its weights from the start of epoch") as err:
        lm.train(model, lambda g: lm.windows(text, 4, 16, g), 20, lr=1e6)
    taken = len(err.value.history)
    assert not model.training and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    reference = tiny()  # the same run, stopped after the steps listed in the history
    if taken:
        lm.train(reference, lambda g: lm.windows(text, 4, 16, g), taken, lr=1e6)
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert taken or all(torch.equal(start[k], v) for k, v in model.state_dict().items())


def test_a_loss_that_turns_nan_later_keeps_the_weights_of_the_completed_steps():
    text = torch.randint(11, (500,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    calls = []

    def loss(z, b):  # finite for steps 0, 1, 2, then NaN
        calls.append(1)
        return lm.cross_entropy(z, b) * (math.nan if len(calls) == 4 else 1.0)

    model, history = tiny(), kd.History()  # an earlier run's history is kept and appended to
    history.add(1, 9.0, math.nan, math.nan, 1e-3, 1.0)
    with pytest.raises(FloatingPointError, match=r"became nan at epoch 5, step 1.*from the start of epoch 5") as err:
        lm.train(model, lambda g: lm.windows(text, 2, 16, g), 6, loss=loss, history=history)
    assert err.value.history is history and len(history) == 4 and history.train_loss[0] == 9.0
    reference = tiny()
    lm.train(reference, lambda g: lm.windows(text, 2, 16, g), 3)  # steps 1 to 3 applied, step 4's update undone
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_weights_that_turn_nan_at_the_last_step_are_restored():
    """A finite loss whose gradient is NaN: only the final check of the weights sees it."""
    text = torch.randint(11, (500,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def loss(z, b):  # the value of the first branch, the gradient of both: sqrt'(negative) is NaN
        return torch.where(torch.tensor(True), lm.cross_entropy(z, b), torch.sqrt(-(z.abs().sum() + 1)))

    model, start = tiny(), tiny().state_dict()
    with pytest.raises(FloatingPointError, match="weights became NaN or infinite in epoch 1"):
        lm.train(model, lambda g: lm.windows(text, 2, 16, g), 1, loss=loss)
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items()) and not model.training


def test_token_kd_runs_a_teacher_in_train_mode_in_eval_mode():
    teacher, student = tiny(dropout=0.5).train(), tiny(width=8)
    batch = torch.randint(11, (3, 9), generator=torch.Generator().manual_seed(1))
    z = student(batch[:, :-1])
    objective = lm.TokenKD(teacher)
    first, second = objective(z, batch), objective(z, batch)
    assert not teacher.training and torch.equal(first, second)  # dropout off: one batch, one loss
    with torch.no_grad():  # as TokenKD runs it (eval mode without gradients takes attention's fast path)
        v = teacher.eval()(batch[:, :-1])
    torch.testing.assert_close(first, forward_kl(z, v), rtol=0, atol=0)


def test_token_kd_takes_the_divergences_by_name():
    teacher, student = tiny(), tiny(width=8)
    batch = torch.randint(11, (3, 9), generator=torch.Generator().manual_seed(2))
    z = student(batch[:, :-1])
    with torch.no_grad():
        v = teacher.eval()(batch[:, :-1])
    for name, divergence in (("forward", forward_kl), ("reverse", reverse_kl), ("jsd", generalized_jsd)):
        torch.testing.assert_close(lm.TokenKD(teacher, name, temperature=2.0)(z, batch),
                                   divergence(z, v, temperature=2.0), rtol=0, atol=0)


def kl_by_hand(z, v, t):
    """KL(p || q) per position at temperature t, float64, times t^2: shape (B, L)."""
    log_p, log_q = F.log_softmax(v.double() / t, -1), F.log_softmax(z.double() / t, -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1) * t * t


def test_token_kd_scores_all_positions_by_default_and_leaves_out_prompt_and_padding_on_request():
    teacher, student = tiny(), tiny(width=8)
    batch = torch.randint(1, 11, (4, 13), generator=torch.Generator().manual_seed(3))
    batch[0, 9:] = 0  # padding (id 0) at the end of the first row
    batch[2, 11:] = 0
    z = student(batch[:, :-1])
    per_position = kl_by_hand(z, teacher.eval()(batch[:, :-1]), 2.0)  # (4, 12): position t predicts id t + 1
    ce = F.cross_entropy(z.double().transpose(1, 2), batch[:, 1:], reduction="none")
    default = lm.TokenKD(teacher, temperature=2.0, alpha=0.5)(z, batch)
    torch.testing.assert_close(default.double(), 0.5 * per_position.mean() + 0.5 * ce.mean(), rtol=1e-5, atol=1e-6)
    scored = torch.ones(4, 12, dtype=torch.bool)
    scored[:, :4] = False  # prompt of 5 ids: positions 0..3 predict ids 1..4, still the prompt
    scored &= batch[:, 1:] != 0  # the next id is padding
    masked = lm.TokenKD(teacher, temperature=2.0, alpha=0.5, prompt=5, pad_id=0)(z, batch)
    expected = 0.5 * per_position[scored].mean() + 0.5 * ce[scored].mean()
    torch.testing.assert_close(masked.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lm.TokenKD(teacher, prompt=1)(z, batch), lm.TokenKD(teacher)(z, batch), rtol=0, atol=0)


def test_on_policy_says_which_positions_are_the_prompt():
    text = torch.randint(11, (300,), dtype=torch.uint8)
    batches = lm.on_policy(tiny(), text, batch_size=2, prompt=5, length=4)
    assert batches.prompt == 5 and batches(torch.Generator().manual_seed(0)).shape == (2, 9)
    assert "By default it scores **all**" in lm.on_policy.__doc__ and "prompt=batches.prompt" in lm.on_policy.__doc__
