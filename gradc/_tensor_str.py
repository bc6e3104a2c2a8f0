"""PyTorch-style printing of tensors (placeholder, replaced by the full formatter)."""
import numpy as np


def format_tensor(t):
    body = np.array2string(np.asarray(t._data), separator=", ", prefix="tensor(")
    return f"tensor({body})"
