"""The client's public API is deliberate, and importing it pulls in no heavy dependency."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import vfq.client
from vfq.client import errors
from vfq.errors import VfqError

HEAVY = (
    "torch",
    "onnxruntime",
    "onnx",
    "scipy",
    "highdicom",
    "pydicom",
    "vfq.export",
    "vfq.phantoms",
    "vfq.server",
)


def test_exported_members_exist_and_nothing_public_is_left_out():
    assert sorted(vfq.client.__all__) == sorted(set(vfq.client.__all__))
    for name in vfq.client.__all__:
        assert hasattr(vfq.client, name), name
    public = {
        name
        for name, value in vars(vfq.client).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)  # submodules are not members
    }
    assert public == set(vfq.client.__all__)


def test_every_client_error_is_a_vfq_error_of_its_own_type():
    types = [getattr(errors, name) for name in errors.__all__]
    assert len(set(types)) == len(types) == 8
    assert all(issubclass(t, VfqError) for t in types)
    assert not any(issubclass(a, b) for a in types for b in types if a is not b)


def test_the_client_and_its_cli_import_without_heavy_dependencies():
    code = f"import sys, vfq.client, vfq.client.cli; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_client_that_sends_arrays_never_loads_simpleitk():
    code = "import sys, vfq.client; print('SimpleITK' in sys.modules, 'vfq.io' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
