"""The package installs under the one `memtape` namespace and every command answers --help."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from memtape.cli import cli


def test_only_memtape_namespace_is_importable_outside_the_repo(tmp_path):
    code = (
        "import importlib.util, json;"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in "
        "['memtape', 'memtape.connectors', 'memtape.transforms', 'memtape.schemas', 'memtape.pipelines',"
        " 'transforms', 'pipelines', 'connectors', 'schemas']}))"
    )
    found = json.loads(subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                                      text=True, check=True).stdout)
    assert all(found[n] for n in ["memtape", "memtape.connectors", "memtape.transforms", "memtape.schemas", "memtape.pipelines"])
    assert not any(found[n] for n in ["transforms", "pipelines", "connectors", "schemas"])


def _all_commands() -> list[list[str]]:
    runner_ctx = cli.make_context("memtape", [], resilient_parsing=True)
    paths = []
    for name in cli.list_commands(runner_ctx):
        cmd = cli.get_command(runner_ctx, name)
        paths.append([name])
        if hasattr(cmd, "list_commands"):
            sub_ctx = cmd.make_context(name, [], resilient_parsing=True, parent=runner_ctx)
            paths += [[name, sub] for sub in cmd.list_commands(sub_ctx)]
    return paths


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p))
def test_every_subcommand_has_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.slow
def test_bad_source_uri_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "memtape", "backfill", "nosuchscheme:/x", "--home", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["error: nosuchscheme:/x: unknown scheme 'nosuchscheme' (known: " + lines[0].split("(known: ")[1]]
