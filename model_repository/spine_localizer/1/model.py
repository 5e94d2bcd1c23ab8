"""The `spine_localizer` step of vertebra_pipeline: the adapter lives in the installed vfq package."""

from vfq.server.backend import OnnxNetworkModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
