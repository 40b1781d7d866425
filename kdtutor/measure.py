"""Moved: what a model costs (bytes, latency) lives in :mod:`kdtutor.evaluation.cost`; this name keeps working."""

from kdtutor.evaluation.cost import latency, size_bytes

__all__ = ["latency", "size_bytes"]
