"""Run every benchmark in one go, each printing its figures and ratios against its anchors.

    uv run python benchmarks/run_all.py          # full sizes (several minutes; needs PostgreSQL)
    uv run python benchmarks/run_all.py --quick  # small sizes, a quick look

The soak (``uv run polly soak``) is separate: it runs for ten minutes by default.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNS = {
    "pool": (["pool_benchmark.py"], ["pool_benchmark.py", "--voters", "50", "--votes", "4"]),
    "vote throughput": (["vote_throughput.py"], ["vote_throughput.py", "--quick"]),
    "census": (["census_benchmark.py"], ["census_benchmark.py", "--sizes", "200000"]),
    "redis outage": (["redis_outage_benchmark.py"], ["redis_outage_benchmark.py"]),
    "overhead": (
        ["overhead_benchmark.py"],
        ["overhead_benchmark.py", "--objects", "200000", "--minutes", "0.5"],
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args()
    failed = []
    for name, (full, quick) in RUNS.items():
        script, *rest = quick if args.quick else full
        print(f"\n===== {name} =====", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *rest], cwd=HERE.parent, check=False)
        if result.returncode:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that could not run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
