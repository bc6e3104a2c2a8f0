"""The `gradc` command: `gradc bench ...` (benchmarks), `gradc opt ...` (passes on IR text)."""
from __future__ import annotations

import sys

USAGE = """usage: gradc <command> [options]

commands:
  bench   time training steps: gradc eager and compiled, PyTorch, JAX, NumPy
  opt     run passes on IR text, like LLVM's opt (gradc opt --help)
"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        from .bench import main as run
    elif cmd == "opt":
        from .passes.opt_cli import main as run
    else:
        print(f"gradc: unknown command {cmd!r}\n\n{USAGE}", end="", file=sys.stderr)
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
