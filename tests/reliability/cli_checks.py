"""Helpers of the reliability tests: run the command line and check that an error is one clean line."""

from __future__ import annotations

from jukebox.cli.main import main


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Run ``jukebox ARGV`` in-process: (exit code, stderr stripped)."""
    capsys.readouterr()
    rc = main(argv)
    return rc, capsys.readouterr().err.strip()


def one_line(err: str, rc: int, expect_rc: int, *words: str) -> None:
    """The run ended with ``expect_rc`` and one line of error naming every one of ``words``."""
    assert rc == expect_rc, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "unexpected" not in err, err
    for w in words:
        assert w in err, err
