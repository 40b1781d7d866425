"""A Sphinx extension: a page that pastes another document's glued values is rebuilt when that document changes.

myst-nb resolves ``{glue:text}`chapter.ipynb::key``` after reading, from the chapter's stored glue data, but records
no dependency: after a chapter's outputs change, an incremental build would keep the old numbers on the pasting
page (the book's "Results at a glance"). Noting the chapter as a dependency makes Sphinx re-read the page.
"""

from __future__ import annotations

from myst_nb.ext.glue.utils import PendingGlueReference


def setup(app):
    app.connect("doctree-read", note_glued_documents)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def note_glued_documents(app, doctree) -> None:
    env = app.env
    for refdoc in sorted({node.refdoc for node in doctree.findall(PendingGlueReference)}):
        env.note_dependency(str(env.doc2path(refdoc)))
