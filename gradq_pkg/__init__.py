"""gradq: train the networks and optimizers of classic deep learning as queued GPU jobs."""

__version__ = "0.1.0"
