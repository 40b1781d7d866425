"""Numbers one chapter takes from another must agree in the stored outputs: book/kd-transfer.ipynb,
book/beyond-logits.ipynb and book/updating.ipynb run their few-label experiments at the temperature and alpha that
book/vanilla-kd.ipynb chose on validation, so their glued ``few_T``/``few_alpha`` must equal vanilla-kd's glued
``best_T``/``best_alpha`` (and updating's all-label ``full_T``/``full_alpha`` vanilla-kd's). Re-execute both
chapters (``bash scripts/execute.sh``) when this fails."""

import json
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"

# (chapter that uses the value, its glue key) -> (chapter that chooses it, its glue key)
LINKS = {
    ("kd-transfer.ipynb", "few_T"): ("vanilla-kd.ipynb", "best_T"),
    ("kd-transfer.ipynb", "few_alpha"): ("vanilla-kd.ipynb", "best_alpha"),
    ("beyond-logits.ipynb", "few_T"): ("vanilla-kd.ipynb", "best_T"),
    ("beyond-logits.ipynb", "few_alpha"): ("vanilla-kd.ipynb", "best_alpha"),
    ("beyond-logits.ipynb", "kd_verdict"): ("vanilla-kd.ipynb", "cnn_verdict"),  # "as Vanilla KD found"
    ("updating.ipynb", "few_T"): ("vanilla-kd.ipynb", "best_T"),
    ("updating.ipynb", "few_alpha"): ("vanilla-kd.ipynb", "best_alpha"),
    ("updating.ipynb", "full_T"): ("vanilla-kd.ipynb", "full_T"),
    ("updating.ipynb", "full_alpha"): ("vanilla-kd.ipynb", "full_alpha"),
}


def stored_glue(doc: str, key: str) -> str:
    """The glued value's text/plain as stored in the chapter's outputs (what the book build pastes)."""
    path = BOOK / doc
    assert path.is_file(), f"{doc} is not in book/"
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                return out["data"]["application/papermill.record/text/plain"]
    raise AssertionError(f"{doc}: no stored glue output {key!r}; re-execute it (bash scripts/execute.sh {path})")


@pytest.mark.parametrize(("user", "source"), list(LINKS.items()), ids=[f"{doc}:{key}" for doc, key in LINKS])
def test_a_value_taken_from_another_chapter_equals_that_chapters_glue(user, source):
    used, chosen = stored_glue(*user), stored_glue(*source)
    try:
        same = float(used) == float(chosen)
    except ValueError:  # a verdict, say: compare the text
        same = used == chosen
    assert same, (f"{user[0]} glues {user[1]} = {used}, but {source[0]} chose {source[1]} = {chosen}: update "
                  f"{user[0]} and re-execute it")
