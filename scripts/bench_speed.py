"""Speed, memory and time to quality of the product's sequence models against a reference SASRec,
in one process, on identical batches (the harness: scripts/speedbench/, whose docstring says what
is measured and how).

    python scripts/bench_speed.py --preset tiny                       # seconds (the test suite's)
    python scripts/bench_speed.py --preset ml1m --contenders reference,transformer --epochs 10
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
for path in (SCRIPTS.parent, SCRIPTS):  # the product, and the harness package next to this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from speedbench.flops import FlopModel  # noqa: E402, F401  (re-exported for callers of this script)
from speedbench.run import main  # noqa: E402

if __name__ == "__main__":
    main()
