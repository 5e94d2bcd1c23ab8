"""vfq.client — the thin client of the vfq Triton server: read a CT, send its pixels and voxel size,
get typed results back, write them as JSON, CSV and an overlay picture.

::

    from vfq.client import VfqClient, write_json, write_overlay_png

    with VfqClient("127.0.0.1:8001") as client:
        client.wait_ready(timeout_s=30)
        result = client.analyze("scans/ct.nii.gz")
    for vertebra in result.vertebrae:
        print(vertebra.level, vertebra.genant_label, vertebra.heights_mm)
    write_json(result, "report.json")
    write_overlay_png(result, "overlay.png")

Needs numpy, SimpleITK (imported on use, to read files), tritonclient[grpc] and Pillow only (no
torch, no onnxruntime). The ``vfq`` command is :mod:`vfq.client.cli`. The DICOM SR and key image of a
study analysed from a DICOM series are :mod:`vfq.client.dicom_sr` (highdicom, imported on use); its
source headers :mod:`vfq.client.dicom_source`.
"""

from vfq.client.connection import COMPRESSIONS, DEFAULT_URL, VfqClient, check_file_size
from vfq.client.errors import (
    DicomSourceError,
    ModelNotReadyError,
    RequestTimeoutError,
    ResponseError,
    ServerBusyError,
    ServerRejectedError,
    ServerUnavailableError,
    SharedMemoryError,
)
from vfq.client.operating_point import DEFAULT_OPERATING_POINT, FRACTURE_THRESHOLDS, OperatingPoint
from vfq.client.outputs import overlay_picture, write_csv, write_error_json, write_json, write_overlay_png
from vfq.client.results import (
    CSV_COLUMNS,
    SAGITTAL_PIXEL_MM,
    SCHEMA_ID,
    StudyResult,
    VertebraResult,
    result_schema,
    validate_result_json,
)
from vfq.client.tls import GrpcTls

__all__ = [
    "COMPRESSIONS",
    "CSV_COLUMNS",
    "DEFAULT_OPERATING_POINT",
    "DEFAULT_URL",
    "FRACTURE_THRESHOLDS",
    "SAGITTAL_PIXEL_MM",
    "SCHEMA_ID",
    "DicomSourceError",
    "GrpcTls",
    "ModelNotReadyError",
    "OperatingPoint",
    "RequestTimeoutError",
    "ResponseError",
    "ServerBusyError",
    "ServerRejectedError",
    "ServerUnavailableError",
    "SharedMemoryError",
    "StudyResult",
    "VertebraResult",
    "VfqClient",
    "check_file_size",
    "overlay_picture",
    "result_schema",
    "validate_result_json",
    "write_csv",
    "write_error_json",
    "write_json",
    "write_overlay_png",
]
