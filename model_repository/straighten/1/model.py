"""The `straighten` step of vertebra_pipeline: the adapter lives in the installed vfq package."""

from vfq.server.backend import StraightenModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
