"""Helpers shared by the parity tests (importable because pytest puts tests/ on sys.path)."""

import torch


def randomize(model: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Far-from-init weights, so activations are large enough to tell GELU variants apart."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model
