"""svmfuzz: fuzzing and regression harness for Linux shared-virtual-memory code."""

__version__ = "0.1.0"
