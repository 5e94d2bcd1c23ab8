"""The README's Python examples run as written (from the repository root). Those that call the
server (they name its default address) run against the real server in tests/server/test_readme_grpc.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALL_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
#: The server's default gRPC address; the examples that use it need a running server.
SERVER_ADDRESS = "127.0.0.1:8001"
BLOCKS = [block for block in ALL_BLOCKS if SERVER_ADDRESS not in block]
SERVER_BLOCKS = [block for block in ALL_BLOCKS if SERVER_ADDRESS in block]


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(block, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()
