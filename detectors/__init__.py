"""Pure numpy detectors over arrays of readings, on event time."""

from detectors.accumulate import rolling_sums
from detectors.threshold import ThresholdDetector
from detectors.windows import Windows, capacity_for

__all__ = ["ThresholdDetector", "Windows", "capacity_for", "rolling_sums"]
