"""The browser test of the built book (a package, so that its conftest does not shadow tests/conftest.py)."""
