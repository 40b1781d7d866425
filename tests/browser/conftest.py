"""The browser test needs the built book and Chromium: the test command's browser stage runs it
(``KDTUTOR_BROWSER_TEST=1``, set by ``browser_test`` in scripts/common.sh) after the book build. The ordinary unit-test
run does not collect it; in the browser stage, a missing book, missing offline assets or a missing Chromium fail.
The JupyterLab test (test_lab_in_browser.py, needs the lab extra) has a stage of its own after it (``lab_test``)."""

import os

collect_ignore_glob = [] if os.environ.get("KDTUTOR_BROWSER_TEST") == "1" else ["test_*.py"]
