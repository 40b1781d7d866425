"""Tests of kdtutor.methods, one file per method module.

A package so that its conftest.py and test modules get names of their own (``methods.conftest``,
``methods.test_controls``) instead of clashing with ``tests/conftest.py`` (which other tests import as
``conftest``) and with ``tests/test_controls.py``.
"""
