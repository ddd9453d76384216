"""The command line's contract: user errors exit 2 with one line, help works."""

from __future__ import annotations

import pytest

from avfusion.errors import InputError
from avfusion.tools import cli


def test_help_lists_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "bench" in capsys.readouterr().out


def test_input_error_exits_2_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()

    def failing(_args: object) -> int:
        raise InputError("samples/x.pcd.bin: size 7 bytes is not a multiple of 20")

    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    subparsers = parser._subparsers._group_actions[0]  # test-only access: argparse has no public subparser list
    failing_parser = subparsers.add_parser("fail")
    failing_parser.set_defaults(func=failing)
    assert cli.main(["fail"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["avfusion fail: error: samples/x.pcd.bin: size 7 bytes is not a multiple of 20"]
