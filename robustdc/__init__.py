"""robustdc: decoupled networks and honest adversarial robustness evaluation."""

__version__ = "0.1.0"
