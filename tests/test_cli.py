"""The help of `tem-track` and its subcommands: complete, and printed as meant."""

from __future__ import annotations

import pytest

from temtrack.cli import SUBCOMMANDS, main


def _help(capsys, *args) -> str:
    with pytest.raises(SystemExit) as info:
        main([*args, "--help"])
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("args", [(), ("video.mp4",)], ids=["main", "main-job"])
def test_help_lists_every_subcommand(capsys, args):
    text = _help(capsys, *args)
    for name in SUBCOMMANDS:
        assert f"{name} (" in text, name


def test_export_help_prints_a_single_percent_sign(capsys):
    text = _help(capsys, "export")
    assert "99.9 % of" in text and "%%" not in text


def test_eval_help_names_every_folder_kind(capsys):
    text = _help(capsys, "eval")
    assert "labelme" in text and "NAME_dislocations.png" in text and "synthetic dataset" in text


@pytest.mark.parametrize("name", ["patches", "bundle"])
def test_module_command_lines_are_subcommands(capsys, name):
    assert _help(capsys, name).startswith(f"usage: tem-track {name} ")


def test_bad_set_override_is_an_error_not_a_traceback(capsys):
    assert main(["train", "--print-config", "--set", "steps=5", "--set", "steps.x=1"]) == 2
    assert "--set steps.x: 'steps' is set to a value and used as a table" in capsys.readouterr().err
