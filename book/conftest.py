"""pytest configuration for ``pytest --nbval book``: check the notebooks in book mode.

``KDTUTOR_BOOK=1`` makes the book's notebooks run quietly: ``kdtutor.notebook.glue``
stores its value without printing ``name = value``, and no progress bars are drawn.
``scripts/execute_notebooks.py`` stores the outputs with it set (``scripts/common.sh``
exports it), so nbval must re-execute the notebooks the same way or every glue cell
would differ. Setting it here, at import time, before nbval starts a kernel (which
inherits this process's environment), makes a bare ``pytest --nbval book`` check the
notebooks exactly as the scripts do. An explicit ``KDTUTOR_BOOK`` in the environment
wins.
"""

import os

os.environ.setdefault("KDTUTOR_BOOK", "1")
