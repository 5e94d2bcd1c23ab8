"""The `keypoint_decoder` step of vertebra_pipeline: the adapter lives in the installed vfq package."""

from vfq.server.backend import DecoderModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
