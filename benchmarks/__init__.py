"""Side-by-side speed benchmarks of plait against transformers (results in BENCHMARKS.md).

OpenMP threads wait passively (sleep) unless the caller chose otherwise. With the default
spin-then-sleep policy, every parallel region on a machine whose cores are busy with other work
costs a full scheduler time slice (we measured ~12 ms for a 50 us attention call), which then
measures the scheduler rather than either library. This must run before torch is imported.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
