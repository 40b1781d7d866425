"""The package version, in one place (read by pyproject.toml and shown by kd.check())."""

__version__ = "0.9.0"
