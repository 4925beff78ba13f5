"""A strict Kubernetes API emulator over kmock 0.8 for the operator's tests (see emulator.py)."""

from .emulator import Fault, StrictEmulator
from .runner import EmulatorThread

__all__ = ["EmulatorThread", "Fault", "StrictEmulator"]
