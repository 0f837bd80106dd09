import subprocess
import sys

from dualpm_addon import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_is_one_line_and_exit_2(capsys):
    assert cli.main(["reconstrut"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown command 'reconstrut'" in err and "\n" not in err


def test_installed_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "dualpm_addon.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("dualpm ")
