"""Shared test settings.

Every model in the tests is tiny (2 layers, width 16-64), where torch's intra-op thread pool
costs more than it saves, and on a busy 2-core machine idle worker threads spinning against
other processes made tiny forwards 10-60x slower. One thread keeps the suite fast and steady.
Tests that start their own processes (DDP) set OMP_NUM_THREADS=1 for them as well.
"""

import torch

torch.set_num_threads(1)
