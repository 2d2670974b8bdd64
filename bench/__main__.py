"""Run every benchmark: `python -m bench` (or `make bench`)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    only = set(sys.argv[1:])  # e.g. `python -m bench bench_ledger`
    for name in names:
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        sys.argv = [name]  # each benchmark parses its own (empty) arguments
        module.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
