"""The `preprocess` step of vertebra_pipeline: the adapter lives in the installed vfq package."""

from vfq.server.backend import PreprocessModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
