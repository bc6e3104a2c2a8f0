"""Errors of gradc's own (shape errors live with the primitive rules)."""
from __future__ import annotations


class TraceError(RuntimeError):
    """Tracing met something that needs a concrete value (data-dependent control flow)."""

    @classmethod
    def concrete(cls, what: str) -> "TraceError":
        from .dispatch import user_location

        return cls(
            f"{what} needs a concrete value, but this tensor is symbolic while gradc traces the function "
            f"(at {user_location()}). A compiled step is one static graph: compute data-dependent values "
            "outside the traced function, return them as outputs, or replace a Python `if` on a tensor "
            "with gradc.where(cond, a, b)."
        )
