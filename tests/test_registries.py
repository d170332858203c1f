"""Every registry entry imports and is the kind of thing its registry promises; one convention."""

from __future__ import annotations

import pytest
import torch.nn as nn

from plait.cli.main import COMMANDS
from plait.config import Config
from plait.hf import FAMILIES
from plait.hf.family import Family
from plait.models import MODELS, model_classes
from plait.models.clip import TEXT_TOWERS, VISION_TOWERS
from plait.registry import Registry
from plait.training.tasks import TASKS, Task

REGISTRIES = {"models": MODELS, "vision towers": VISION_TOWERS, "text towers": TEXT_TOWERS,
              "tasks": TASKS, "hf families": FAMILIES, "commands": COMMANDS}
ENTRIES = [(kind, name) for kind, reg in REGISTRIES.items() for name in reg]


@pytest.mark.parametrize("kind,name", ENTRIES, ids=[f"{k}:{n}" for k, n in ENTRIES])
def test_every_entry_imports_as_what_its_registry_holds(kind, name):
    obj = REGISTRIES[kind].get(name)
    if kind in ("models", "vision towers", "text towers"):
        assert issubclass(obj, nn.Module) and issubclass(obj.config_class, Config)
    elif kind == "tasks":
        assert issubclass(obj, Task) and issubclass(obj.data_config, Config)
    elif kind == "hf families":
        fam = obj()
        assert isinstance(fam, Family) and issubclass(fam.model_class, nn.Module)
    else:  # a command: its module also declares its arguments
        assert callable(obj) and callable(REGISTRIES[kind].module(name).add_arguments)


def test_model_classes_pairs_config_and_model():
    config_cls, model_cls = model_classes("gpt")
    assert model_cls.__name__ == "GPT" and config_cls.__name__ == "GPTConfig"


def test_unknown_names_and_malformed_targets_fail_by_name():
    reg = Registry("widget", {"a": "plait.io:read_json"})
    with pytest.raises(ValueError, match=r"unknown widget 'b' \(known: a\)"):
        reg.get("b")
    with pytest.raises(ValueError, match="must be 'module:attr'"):
        reg.register("c", "plait.io.read_json")
    reg.register("gone", "plait.no_such_module:Thing")
    with pytest.raises(ModuleNotFoundError):
        reg.get("gone")  # a stale entry fails loudly, never skipped
