"""Side-by-side speed benchmarks of plait against transformers (see BENCHMARKS.md)."""
