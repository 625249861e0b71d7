"""UnpairedSR-Bench: a benchmark harness for unpaired / blind image super-resolution."""

__version__ = "0.1.0"
