"""`gradc bench`: time training steps of gradc (eager and compiled) against PyTorch, JAX and NumPy.

    gradc bench [--workloads linreg,mlp_small,mlp_large] [--modes ...] [--quick]
                [--json PATH] [--markdown PATH] [--plot PATH]

(also `python -m gradc.bench`). See `workloads.py` for the models and the
FLOP formula, `modes.py` for how each mode runs a step, `measure.py` for how
time and memory are measured.
"""
from .cli import main

__all__ = ["main"]
