"""pytest configuration for ``pytest --nbval book``: check notebooks as stored.

``KDTUTOR_BOOK=1`` makes the book's notebooks run quietly: ``kdtutor.notebook.glue``
stores its value without printing ``name = value``, and no progress bars are drawn.
``kdtutor.notebook.pin_numerics`` fixes PyTorch's and oneDNN's instruction set
(AVX2) and the thread count (2), so that the floats do not depend on the CPU.
``scripts/execute_notebooks.py`` stores the outputs with both, so nbval must
re-execute the notebooks the same way or the numbers would differ. Setting them
here, at import time, before nbval starts a kernel (which inherits this process's
environment), makes a bare ``pytest --nbval book`` check the notebooks exactly as
the scripts do. A variable already set in the environment wins
(``KDTUTOR_NUMERICS=native`` leaves the numerics alone).
"""

import os

from kdtutor.notebook import pin_numerics

os.environ.setdefault("KDTUTOR_BOOK", "1")
pin_numerics()
