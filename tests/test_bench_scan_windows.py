"""benchmarks/bench_scan_windows.py counts the Windows findings with this checkout's code.

The benchmark counts the Windows checks' findings in process next to the child scan. Its WOF
volume builder imports ``tests/test_windows_wof``, which imports ``cranewatch``; the benchmark
used to put this checkout's ``src`` on ``sys.path`` only afterwards, so without PYTHONPATH that
import found another checkout's package (the venv's editable install) and the count was that
version's: 3 findings on the 1 GB tree one run, 6 the next, with nothing in the scan changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_benchmark_imports_this_checkouts_cranewatch_without_pythonpath(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    program = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('bench', {str(REPO / 'benchmarks/bench_scan_windows.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "import cranewatch\n"
        "print(cranewatch.__file__)\n"
    )
    run = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-500:]
    assert Path(run.stdout.strip()) == REPO / "src/cranewatch/__init__.py"
