"""The ``plait`` command as a whole: help for every subcommand, one-line errors, exit codes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plait.cli.main import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_explains_itself(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: plait {name}")
    description = out.split("\n\n")[1].strip()
    assert len(description) > 20, f"'plait {name} --help' has no description"


def test_unknown_command_and_no_command_exit_2(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and len(err.strip().splitlines()) == 1
    assert main([]) == 2


def _console_script() -> list[str]:
    exe = Path(sys.executable).with_name("plait")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("plait")
    return [found] if found else [sys.executable, "-m", "plait.cli.main"]


@pytest.mark.parametrize("args,needle", [
    (["generate", "--model", "no/such/folder", "--prompt", "hi"], "model folder not found"),
    (["train", "no/such/recipe.toml"], "not found"),
    (["frobnicate"], "unknown command"),
])
def test_real_console_script_prints_one_line_and_no_traceback(args, needle, tmp_path):
    r = subprocess.run(_console_script() + args, capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
