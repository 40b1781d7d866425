import sys
import types

from kdtutor.notebook import glue, timed


def test_glue_prints_and_hands_values_to_myst_nb(monkeypatch, capsys):
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
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # import fails, as on Colab
    glue("n", 1234, ",")
    assert capsys.readouterr().out == "n = 1,234\n"


def test_timed_records_and_prints(capsys):
    store = {}
    with timed("step", store):
        pass
    assert store["step"] >= 0 and capsys.readouterr().out.startswith("step: ")
