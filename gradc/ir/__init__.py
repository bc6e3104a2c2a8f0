"""gradc's IR: a small, typed, flat, printable graph language (see graph.py)."""
from .graph import GRAD, INPUT_KINDS, Graph, Node, Value, ancestors
from .printer import format_graph
from .parser import IRParseError, parse
from .verify import VerifyError, check, verify
from .interpreter import interpret
from . import builder  # installs symbolic binding  # noqa: F401

__all__ = ["Graph", "Node", "Value", "GRAD", "INPUT_KINDS", "ancestors", "format_graph", "parse",
           "IRParseError", "verify", "VerifyError", "check", "interpret"]
