"""Side-by-side speed benchmarks of plait against transformers (results in BENCHMARKS.md).

Run them on an otherwise idle machine. OpenMP's wait policy is left as the user has it (the
header of every run prints it): with the default spin-then-sleep policy a busy machine charges
a scheduler time slice to parallel regions (we measured ~12 ms for a 50 us attention call), so
there ``OMP_WAIT_POLICY=PASSIVE`` gives steadier numbers; on an idle one it costs plait's decode
8-10 % (each thread-split GEMV then wakes a sleeping thread), see BENCHMARKS.md.
"""
