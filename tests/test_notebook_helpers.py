import sys
import types

from kdtutor.notebook import glue, timed


def test_glue_prints_and_hands_values_to_myst_nb(monkeypatch, capsys):
    monkeypatch.delenv("KDTUTOR_BOOK", raising=False)
    glued = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display: glued.__setitem__(name, (value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    glue("acc", 0.91234, ".1%")
    glue("cls", "Shirt")
    assert capsys.readouterr().out == "acc = 91.2%\ncls = Shirt\n"
    assert glued["acc"] == (0.91234, False)
    assert repr(glued["cls"][0]) == "Shirt"  # shown without quotes in the prose


def test_glue_without_myst_nb_still_prints(monkeypatch, capsys):
    monkeypatch.delenv("KDTUTOR_BOOK", raising=False)
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import fails, as on Colab
    glue("n", 1234, ",")
    assert capsys.readouterr().out == "n = 1,234\n"


def test_timed_records_and_prints(capsys):
    store = {}
    with timed("step", store):
        pass
    assert store["step"] >= 0 and capsys.readouterr().out.startswith("step: ")


def test_glue_is_silent_in_the_book_but_still_glues(monkeypatch, capsys):
    """Executed for the book (KDTUTOR_BOOK=1) the value goes to the prose only; nbval compares the glued record."""
    glued = {}
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display: glued.__setitem__(name, value)
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    monkeypatch.setenv("KDTUTOR_BOOK", "1")
    glue("acc", 0.5, ".1%")
    assert capsys.readouterr().out == "" and glued == {"acc": 0.5}


def test_pm_and_show_image():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    import kdtutor as kd
    from kdtutor.notebook import pm, show_image

    assert pm(0.91234, 0.0015) == "91.23 ± 0.15"
    pixels = torch.rand(1, 28, 28)
    normalized = (pixels - kd.FMNIST_MEAN) / kd.FMNIST_STD
    assert torch.allclose(kd.denormalize(normalized), pixels, atol=1e-6)
    fig, ax = plt.subplots()
    show_image(ax, normalized, "a title", fontsize=9)
    shown = ax.images[0].get_array()
    assert ax.get_title() == "a title" and not ax.axison
    assert torch.allclose(torch.as_tensor(shown.data), pixels[0], atol=1e-6)
    plt.close(fig)
