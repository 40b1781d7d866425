"""Checkpoint format 2: plain ``torch.load(path, weights_only=True)`` opens every kdtutor checkpoint, the shipped
weights included; the SHA-256 inside still catches any change; format-1 files still load; what ``load`` cannot
rebuild is refused by ``save``; lineage survives moving its folder."""

import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kdtutor as kd
from kdtutor import lm
from kdtutor.checkpoint import FORMAT, CheckpointError, lineage, provenance, write_verified
from kdtutor.models import registry

ROOT = Path(__file__).resolve().parents[1]

# SHA-256 over (name, raw bytes) of every tensor of each shipped state_dict, computed from the format-1 files shipped
# before the rewrite: the weights every chapter's stored outputs were computed with.
WEIGHTS_BEFORE = {
    "lm_student_kjv": "87dbc0e781e4087aad2c2388da19b78a837369edc2ed3228f914396c4e1c7648",
    "lm_teacher_kjv": "9211fd5f6cd3b31edf3b8cd226a7798c7be7015c13f45d560a7098ca1203a45a",
    "teacher_fmnist": "5e969a460f7fcda57adf7c99d9124cfa40735e384d47f754486623628f42ef97",
    "teacher_fmnist_pruned": "ee3d4d98c1c5229df85797ea71948ecac89c9f69e42794c23476b606c84aca3f",
    "teacher_fmnist_v2": "6f33cbf56d3cf637cb34f6fa01a514263ee433f80c8d703b1d8515aec1f7475d",
    "vgg12_fmnist": "eef3af5c854602ff36502d149df4d735744457b7164a960601dcaa981c22f620",
}
CLASSES = {"CNN": kd.CNN, "VGG12": kd.VGG12, "CharTransformer": lm.CharTransformer}


def weights_sha(state_dict: dict) -> str:
    h = hashlib.sha256()
    for name, tensor in state_dict.items():
        h.update(name.encode())
        h.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def small_mlp(seed=0):
    torch.manual_seed(seed)
    return kd.MLP(in_features=4, hidden=(3,), num_classes=2)


def format_1(path: Path, payload: dict) -> Path:
    """A file as kdtutor wrote them before format 2: a header line with the payload's SHA-256, then the payload."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.write_bytes(b"kdtutor-checkpoint 1 " + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    return path


# --- the shipped models --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", registry.shipped_models())
def test_plain_torch_opens_every_shipped_model(name):
    path = registry.WEIGHTS_DIR / registry.record(name)["file"]
    raw = torch.load(path, weights_only=True)  # no kdtutor involved
    assert raw["format"] == FORMAT and set(raw) == {"format", "state_dict", "metadata", "arch", "module", "config",
                                                   "sha256"}
    model = CLASSES[raw["arch"]](**raw["config"])
    model.load_state_dict(raw["state_dict"])  # strict: every name and shape
    assert raw["module"] == CLASSES[raw["arch"]].__module__
    assert weights_sha(raw["state_dict"]) == WEIGHTS_BEFORE[name]  # bit-identical to the format-1 file's weights
    shipped = registry.pretrained(name).state_dict()
    assert list(shipped) == list(raw["state_dict"])
    assert all(shipped[k].dtype == v.dtype and torch.equal(shipped[k], v) for k, v in raw["state_dict"].items())
    assert weights_sha(shipped) == WEIGHTS_BEFORE[name]


def test_the_record_pins_the_file():
    for name in registry.shipped_models():
        record = registry.record(name)
        blob = (registry.WEIGHTS_DIR / record["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == record["sha256"] and len(blob) == record["size_bytes"]
        assert not blob.startswith(b"kdtutor-checkpoint 1 ")  # rewritten in format 2


def locked_torch() -> str:
    pins = dict(line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    return pins["torch"].strip()


@pytest.mark.skipif(torch.__version__.split("+")[0] != locked_torch(),
                    reason="torch.save lays out its bytes per torch version: the locked torch wrote the shipped files")
def test_resaving_a_shipped_model_reproduces_its_file(tmp_path):
    """The build scripts write through kd.save: the same weights and metadata give the same bytes (same torch)."""
    model, meta = kd.load(registry.verify("teacher_fmnist_pruned"))
    path = kd.save(model, tmp_path / "again.pt", **meta)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == registry.record("teacher_fmnist_pruned")["sha256"]


# --- the format ----------------------------------------------------------------------------------------------------

def test_a_saved_checkpoint_is_a_plain_dict_of_tensors_and_plain_values(tmp_path):
    model = small_mlp()
    path = kd.save(model, tmp_path / "m.pt", acc=0.5, note="hi", seeds=[0, 1], extra={"t": 2.0}, nothing=None)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "kdtutor-checkpoint/2" and raw["arch"] == "MLP" and raw["module"] == "kdtutor.models.nets"
    assert raw["metadata"] == {"acc": 0.5, "note": "hi", "seeds": [0, 1], "extra": {"t": 2.0}, "nothing": None}
    assert raw["config"] == model.config and isinstance(raw["sha256"], str) and len(raw["sha256"]) == 64
    assert all(torch.equal(raw["state_dict"][k], v) for k, v in model.state_dict().items())
    unregistered = torch.load(kd.save(torch.nn.Linear(2, 2), tmp_path / "l.pt"), weights_only=True)
    assert unregistered["arch"] is None and unregistered["module"] is None and unregistered["config"] is None


@pytest.mark.parametrize("change", ["weight", "metadata", "config", "drop the hash"])
def test_the_hash_inside_catches_a_file_torch_still_opens(tmp_path, change):
    """Rewritten with torch.save (a valid archive, torch.load opens it) but changed: load refuses it."""
    path = kd.save(small_mlp(), tmp_path / "m.pt", acc=0.5)
    raw = torch.load(path, weights_only=True)
    if change == "weight":
        raw["state_dict"]["classifier.bias"][0] += 1e-6
    elif change == "metadata":
        raw["metadata"]["acc"] = 0.9
    elif change == "config":
        raw["config"]["dropout"] = 0.1
    else:
        del raw["sha256"]
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        kd.load(path)


def test_saving_draws_no_random_numbers(tmp_path):
    """save builds the architecture on the meta device to check it: the random stream the book relies on is kept."""
    model = kd.teacher_cnn()
    state = torch.get_rng_state()
    kd.save(model, tmp_path / "t.pt")
    assert torch.equal(torch.get_rng_state(), state)


def test_format_1_files_still_load(tmp_path):
    model = small_mlp()
    payload = {"state_dict": model.state_dict(), "metadata": {"acc": 0.5}, "arch": "MLP", "config": model.config}
    path = format_1(tmp_path / "old.pt", payload)
    loaded, meta = kd.load(path)
    assert type(loaded) is kd.MLP and meta == {"acc": 0.5}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        kd.load(path)


def test_cached_logits_files_use_the_format_too(tmp_path):
    path = write_verified(tmp_path / "c.pt", {"key": "k", "logits": torch.arange(6.0).reshape(2, 3)})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["key"] == "k" and torch.equal(raw["logits"], torch.arange(6.0).reshape(2, 3))


# --- row 1: save refuses what load could not rebuild ---------------------------------------------------------------

def test_a_channel_pruned_mlp_is_refused_at_save_and_a_pruned_cnn_loads(tmp_path):
    kc = pytest.importorskip("kdtutor.compression")
    pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    pruned = kc.prune_channels(kd.MLP(hidden=(16,)), 0.5, example=torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"model: this MLP's weights no longer fit its config \(features.1.weight: "
                                         r"shape \(8, 784\), but MLP\(\*\*model.config\) has \(16, 784\)\)"):
        kd.save(pruned, tmp_path / "mlp.pt")
    assert not list(tmp_path.iterdir())  # nothing written
    rebuilt = kd.MLP(hidden=(8,))  # what the message says to do
    rebuilt.load_state_dict(pruned.state_dict())
    loaded, _ = kd.load(kd.save(rebuilt, tmp_path / "mlp.pt"))
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded.eval()(x), pruned.eval()(x))
    cnn = kc.prune_channels(kd.teacher_cnn(), 0.5)  # a CNN stays a CNN: saved and loaded like any other
    loaded, _ = kd.load(kd.save(cnn, tmp_path / "cnn.pt"))
    assert loaded.config == cnn.config and torch.equal(loaded.eval()(x), cnn.eval()(x))


def test_any_registered_model_changed_after_it_was_built_is_refused(tmp_path):
    model = small_mlp()
    model.classifier = torch.nn.Linear(3, 5)  # five outputs; its config still says two
    with pytest.raises(ValueError, match=r"classifier.weight: shape \(5, 3\), but MLP\(\*\*model.config\) has "
                                         r"\(2, 3\)"):
        kd.save(model, tmp_path / "m.pt")
    model.extra = torch.nn.Linear(1, 1)  # an entry the config does not build
    model.classifier = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match=r"extra.weight: shape \(1, 1\), but .* has no such entry"):
        kd.save(model, tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())


def test_an_int8_linear_model_is_refused_at_save(tmp_path):
    kc = pytest.importorskip("kdtutor.compression")
    pytest.importorskip("torchao")
    quantized = kc.int8_linear(small_mlp())
    with pytest.raises(ValueError, match=r"model: expected weights in plain tensors, got features.1.weight: a tensor "
                                         r"subclass, .*save the model before quantizing it"):
        kd.save(quantized, tmp_path / "q.pt")
    assert not (tmp_path / "q.pt").exists()


# --- row 2: an architecture kdtutor knows but has not imported -------------------------------------------------------

def test_a_char_transformer_loads_without_importing_kdtutor_lm_first(tmp_path):
    path = kd.save(lm.CharTransformer(vocab_size=5, context=8, layers=1, width=8, heads=2), tmp_path / "lm.pt")
    code = ("import sys, kdtutor as kd\n"
            "assert 'kdtutor.lm' not in sys.modules\n"
            f"model, _ = kd.load({str(path)!r})\n"
            "print(type(model).__module__, type(model).__name__, model.config['width'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["kdtutor.lm", "CharTransformer", "8"]


def test_an_unknown_architecture_is_named_and_its_module_never_imported(tmp_path):
    model = small_mlp()
    path = write_verified(tmp_path / "m.pt", {"state_dict": model.state_dict(), "metadata": {}, "arch": "Mystery",
                                              "module": "kdtutor_test_never_imported", "config": {}})
    with pytest.raises(ValueError, match=r"holds a Mystery \(defined in kdtutor_test_never_imported\), which kdtutor "
                                         r"cannot rebuild; import kdtutor_test_never_imported first, or pass"):
        kd.load(path)
    assert "kdtutor_test_never_imported" not in sys.modules
    loaded, _ = kd.load(path, model=small_mlp(1))
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)


# --- row 4: lineage resolves relative paths against the checkpoint's folder -----------------------------------------

def chain_in(folder: Path, monkeypatch) -> Path:
    """v1 <- v2 <- v3 in ``folder``, saved with paths relative to the working directory (``folder``'s parent)."""
    monkeypatch.chdir(folder.parent)
    rel = Path(folder.name)
    kd.save(small_mlp(1), rel / "v1.pt", seed=1)
    kd.save(small_mlp(2), rel / "v2.pt", seed=2, updated_from=provenance(rel / "v1.pt"))
    kd.save(small_mlp(3), rel / "v3.pt", seed=3, updated_from=provenance(rel / "v2.pt"))
    return folder / "v3.pt"


def test_lineage_survives_chdir_and_moving_the_folder(tmp_path, monkeypatch):
    (tmp_path / "work" / "runs").mkdir(parents=True)
    newest = chain_in(tmp_path / "work" / "runs", monkeypatch)
    assert [s["metadata"]["seed"] for s in lineage(newest)] == [3, 2, 1]
    assert torch.load(newest, weights_only=True)["metadata"]["updated_from"]["path"] == "v2.pt"  # relative to runs/
    monkeypatch.chdir(tmp_path)  # another working directory
    assert [s["metadata"]["seed"] for s in lineage(newest)] == [3, 2, 1]
    moved = tmp_path / "elsewhere" / "deeper"
    moved.parent.mkdir()
    shutil.move(tmp_path / "work" / "runs", moved)  # the folder moved whole
    monkeypatch.chdir(moved)
    chain = lineage("v3.pt")
    assert [s["metadata"]["seed"] for s in chain] == [3, 2, 1]
    assert [Path(s["path"]).resolve() for s in chain[1:]] == [moved / "v2.pt", moved / "v1.pt"]
    kd.save(small_mlp(9), moved / "v1.pt")  # the parent overwritten: still caught
    with pytest.raises(CheckpointError, match="v1.pt is missing or has changed"):
        lineage(moved / "v3.pt")


@pytest.mark.parametrize("recorded", ["relative to the working directory", "absolute"])
def test_lineage_of_files_saved_before_the_fix(tmp_path, monkeypatch, recorded):
    """Files saved before the fix hold the parent's path as it was given: they resolve as before, and, once the
    folder has moved, by the parent's file name in the child's folder (the SHA-256 still checked)."""
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    first = kd.save(small_mlp(1), Path("runs") / "v1.pt", seed=1)
    path = "runs/v1.pt" if recorded.startswith("relative") else str(tmp_path / "runs" / "v1.pt")
    model = small_mlp(2)
    meta = {"seed": 2, "updated_from": {**provenance(first), "path": path}}
    format_1(tmp_path / "runs" / "v2.pt", {"state_dict": model.state_dict(), "arch": "MLP", "config": model.config,
                                           "metadata": meta})
    assert [s["metadata"]["seed"] for s in lineage("runs/v2.pt")] == [2, 1]
    (tmp_path / "moved").mkdir()
    shutil.move(tmp_path / "runs", tmp_path / "moved" / "runs2")
    monkeypatch.chdir(tmp_path / "moved")
    assert [s["metadata"]["seed"] for s in lineage(tmp_path / "moved" / "runs2" / "v2.pt")] == [2, 1]
