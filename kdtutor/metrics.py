"""Moved: calibration lives in :mod:`kdtutor.evaluation.calibration`; this name keeps working."""

from kdtutor.evaluation.calibration import Reliability, expected_calibration_error, fit_temperature, reliability

__all__ = ["Reliability", "expected_calibration_error", "fit_temperature", "reliability"]
