"""The README's examples that call the server run as written against the real one (its address
substituted): the 10-line tritonclient example and the client-library example."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_readme import ROOT, SERVER_ADDRESS, SERVER_BLOCKS

from vfq.pipeline import SPINE_TOO_SHORT


def run_block(marker: str, server, monkeypatch, capsys) -> str:
    (block,) = [block for block in SERVER_BLOCKS if marker in block]
    monkeypatch.chdir(ROOT)
    exec(compile(block.replace(SERVER_ADDRESS, server.grpc_url), "README.md", "exec"), {})
    return capsys.readouterr().out


def test_the_tritonclient_example_prints_the_five_lumbar_bodies(server, monkeypatch, capsys):
    printed = run_block("tritonclient.grpc", server, monkeypatch, capsys)
    # L1-L5, superior first; L1 graded 2 (anterior height 20.4 mm against 29.1 mm posterior)
    assert printed.startswith("[b'L1' b'L2' b'L3' b'L4' b'L5'] [2 0 0 0 0] [[20.4 22.6 29.1]")


def test_the_client_library_example_says_why_a_20_slice_scan_cannot_be_graded(server, monkeypatch, capsys):
    printed = run_block("VfqClient", server, monkeypatch, capsys)
    assert printed.strip() == SPINE_TOO_SHORT
