"""The int8 / int4 CPU kernels of :mod:`plait.nn.quant`: built from ``quant_kernel.cpp`` at first
use with the system compiler, loaded as ``torch.ops.plait_quant``.

Where: ``$PLAIT_CACHE``, else ``$XDG_CACHE_HOME/plait``, else ``~/.cache/plait``, in
``kernels/quant-<key>/``. The key hashes the source, the compiler flags, torch's version and the
machine, so an edited source, another torch or a CPU with other instructions builds anew and
never loads a stale library (a home folder shared between machines is safe).

Flags: ``-O3 -fopenmp -mavx2 -mfma -mf16c`` where torch reports AVX2 (or AVX-512) and the CPU
lists those three features, else ``-O3 -fopenmp`` (the portable C++ path of the source).
``-fopenmp`` is what makes ``at::parallel_for`` split the rows over torch's threads. Not
``-march=native``: it would let the compiler use whatever this CPU has beyond the key's
features (AVX-512 on one host of a shared cache) and the library could crash on another.
``-ffp-contract=off`` keeps the dequantisation's rounding that of PyTorch's (a multiply, then an
add), so both paths dequantise to the same floats.

Concurrent first uses (several processes, ``pytest -n``) build once: an exclusive ``flock``
(released by the kernel if its holder dies) is held while building, and whoever waited finds the
library built. A library is loaded only once a ``built`` marker beside it says its build
finished; a build killed half-way is redone. If anything fails (no compiler or ninja, a compile
error, a big-endian CPU), :func:`ops` warns once, in one line, and returns None:
:class:`plait.nn.quant.QuantLinear` then dequantises and calls ``F.linear``, which gives the same
results, slower.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("quant_kernel.cpp")
NAME = "plait_quant"
_lock = threading.Lock()
_state: dict[str, Any] = {}  # "ops": the loaded namespace or None, once tried


def cache_dir() -> Path:
    """Where built kernels live: $PLAIT_CACHE, else $XDG_CACHE_HOME/plait, else ~/.cache/plait."""
    if os.environ.get("PLAIT_CACHE"):
        return Path(os.environ["PLAIT_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "plait"


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compile_flags() -> list[str]:
    """-O3 and -fopenmp (``at::parallel_for`` is OpenMP inlined from ATen's header: without the
    flag it runs on one thread), plus AVX2 / FMA / F16C where torch and the CPU both have them."""
    flags = ["-O3", "-ffp-contract=off", "-fopenmp"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in ("AVX2", "AVX512") and {"avx2", "fma", "f16c"} <= cpu_flags():
        flags += ["-mavx2", "-mfma", "-mf16c"]
    return flags


def build_dir(flags: list[str]) -> Path:
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(flags).encode(), torch.__version__.encode(),
                 platform.machine().encode(), torch.backends.cpu.get_cpu_capability().encode()):
        key.update(part)
    return cache_dir() / "kernels" / f"quant-{key.hexdigest()[:16]}"


def ninja_on_path() -> None:
    """torch's builder runs ``ninja`` from PATH; a venv's own (the ``ninja`` wheel, a
    dependency) is not on PATH when the venv's python is run without activating it."""
    import shutil

    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build_and_load() -> Any:
    if sys.byteorder != "little":  # the kernel reads packed nibbles as little-endian words
        raise RuntimeError("the kernel assumes a little-endian CPU")
    flags = compile_flags()
    where = build_dir(flags)
    library = where / f"{NAME}.so"
    where.mkdir(parents=True, exist_ok=True)
    import fcntl

    built = where / "built"  # written once the library loaded: without it, it may be cut short
    with open(where.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if built.is_file() and library.is_file():
            torch.ops.load_library(str(library))
            return torch.ops.plait_quant
        from torch.utils.cpp_extension import load

        ninja_on_path()
        print(f"plait: compiling the int8/int4 CPU kernel into {where} (once, 20-60 s)",
              file=sys.stderr, flush=True)
        # a killed build may have left a partial library (loading it would crash the process)
        # and torch's own build lock, which would block us for ever; nobody else can be
        # building while we hold the flock
        library.unlink(missing_ok=True)
        (where / "lock").unlink(missing_ok=True)
        # -fopenmp links libgomp.so.1: the one torch has loaded already (same soname), so the
        # kernel's threads are torch's pool
        load(NAME, [str(SOURCE)], extra_cflags=flags, extra_ldflags=["-fopenmp"],
             build_directory=str(where), is_python_module=False, verbose=False)
        built.write_text(" ".join(flags) + "\n")
    return torch.ops.plait_quant


def ops() -> Any:
    """``torch.ops.plait_quant``, built and loaded on the first call; None (after one warning)
    when it cannot be."""
    if "ops" in _state:  # every forward asks: no lock once settled
        return _state["ops"]
    with _lock:
        if "ops" not in _state:
            try:
                _state["ops"] = _build_and_load()
            except Exception as e:  # any failure means: use the fallback
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                warnings.warn(f"plait: no int8/int4 CPU kernel ({reason}); quantised layers"
                              " dequantise and use F.linear instead (same results, slower)",
                              RuntimeWarning, stacklevel=2)
                _state["ops"] = None
        return _state["ops"]
