"""Results a hospital can file: a DICOM Structured Report and a key image of one analysed study.

Both are built with highdicom in the study of the source series (:mod:`vfq.client.dicom_source`),
with its patient and study modules copied on the client side.

**The SR** is a Comprehensive 3D SR holding a TID 1500 Measurement Report (title "Imaging
Measurement Report", procedure "Computed tomography"; device observer "vfq"). Its measurement
groups (TID 1501), each with the algorithm's identity (TID 4019: name ``vfq``, its version, and as
parameters the served model and version, the sha256 of the shipped weights where this checkout has
them, and the operating point):

* one **spine** group (finding site "Spine"): "Vertebral compression fracture" yes/no — whether any
  vertebra is flagged at the operating point — or, for a study that cannot be assessed, no such
  evaluation but a TEXT item "Reason not assessable" with the server's reason;
* one group per **vertebra** of Genant grade ≥ ``min_report_grade``, superior first, tracking
  identifier its level (finding site: the vertebra's SNOMED CT code, C1…L5; "Vertebra" where the
  level is unknown or has no code there — T13, L6): three "Height" measurements in mm whose finding
  site carries the topographical modifier Anterior, Central or Posterior, each inferred from a
  SCOORD3D POLYLINE of its two keypoints (upper, then lower endplate) in world LPS mm — DICOM
  patient coordinates of the source series' Frame of Reference — so the six keypoints are the
  vertices of the three lines; the relative height loss in % (100 × fracture score); and the
  qualitative evaluations "Genant semiquantitative grade" (Normal, Mild, Moderate, Severe) and
  "Vertebral compression fracture" (yes/no at the operating point).

Concepts without a standard code use the private coding scheme ``99VFQ`` declared in the SR's
Coding Scheme Identification Sequence (:data:`VFQ_CODES`). The SR is complete and preliminary
(unverified: a radiologist has not read it); its evidence is every instance of the source series.

**The key image** is :func:`vfq.client.outputs.overlay_picture` as an RGB Secondary Capture image in
the same study (patient orientation P\\F for the straightened image: columns posterior, rows feet;
none for the picture of a study that cannot be assessed).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

import vfq
from vfq.client.dicom_source import DicomSource
from vfq.client.errors import DicomSourceError
from vfq.client.outputs import _write_atomically, overlay_picture
from vfq.client.results import SOFTWARE_NAME, StudyResult
from vfq.genant import GenantGrade
from vfq.keypoints import HEIGHT_PAIRS
from vfq.levels import Level

__all__ = [
    "KEY_IMAGE_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "VFQ_CODES",
    "key_image",
    "structured_report",
    "weights_sha256",
    "write_dicom_sr",
    "write_key_image",
]

#: Series numbers of the SR and of the key image (new series in the source's study).
SR_SERIES_NUMBER = 9901
KEY_IMAGE_SERIES_NUMBER = 9902

#: The private coding scheme of the concepts DICOM has no code for.
VFQ_SCHEME = "99VFQ"
HEIGHT_LOSS = Code("RHL", VFQ_SCHEME, "Relative vertebral body height loss")
GENANT_GRADE = Code("GENANT", VFQ_SCHEME, "Genant semiquantitative grade")
VERTEBRAL_FRACTURE = Code("VCF", VFQ_SCHEME, "Vertebral compression fracture")
NOT_ASSESSABLE = Code("NOTASSESS", VFQ_SCHEME, "Reason not assessable")
#: Every code of :data:`VFQ_SCHEME`.
VFQ_CODES: tuple[Code, ...] = (HEIGHT_LOSS, GENANT_GRADE, VERTEBRAL_FRACTURE, NOT_ASSESSABLE)

#: Finding site of each level that SNOMED CT names (C1…C7, T1…T12, L1…L5, from pydicom's code dictionary).
LEVEL_SITES: dict[Level, Code] = {
    level: getattr(codes.SCT, f"{level.value}Vertebra")
    for level in Level
    if hasattr(codes.SCT, f"{level.value}Vertebra")
}
#: The Genant grades as SNOMED CT qualifier values.
GRADE_VALUES: dict[GenantGrade, Code] = {
    GenantGrade.NORMAL: codes.SCT.Normal,
    GenantGrade.MILD: codes.SCT.Mild,
    GenantGrade.MODERATE: codes.SCT.Moderate,
    GenantGrade.SEVERE: codes.SCT.Severe,
}
#: Topographical modifiers of the anterior, middle and posterior heights (:data:`vfq.keypoints.HEIGHT_NAMES`).
HEIGHT_SITES: tuple[Code, Code, Code] = (codes.SCT.Anterior, codes.SCT.Central, codes.SCT.Posterior)

#: PatientOrientation of the straightened image: along a row posterior, down a column to the feet.
STRAIGHTENED_ORIENTATION = ("P", "F")

#: Where a source checkout keeps the shipped weights, and their manifest (written by ``vfq-export``).
WEIGHTS_DIR = Path(vfq.__file__).resolve().parents[1] / "export" / "weights"
WEIGHTS_MANIFEST = "export.json"


def weights_sha256(weights_dir: Path = WEIGHTS_DIR) -> str | None:
    """The sha256 (hex) of the two ONNX networks in ``weights_dir`` — the localizer's bytes, then the
    detector's, as named by its ``export.json`` — or ``None`` where they are not there (an installed
    client without the source checkout)."""
    try:
        manifest = json.loads((weights_dir / WEIGHTS_MANIFEST).read_text(encoding="utf-8"))
        files = [weights_dir / manifest[network]["onnx"] for network in ("localizer", "detector")]
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.read_bytes())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest.hexdigest()


# ---------------------------------------------------------------------- the SR


def structured_report(result: StudyResult, source: DicomSource) -> hd.sr.Comprehensive3DSR:
    """The Comprehensive 3D SR (TID 1500) of ``result`` in the study of ``source`` (see the module
    docstring for its content).

    Raises:
        DicomSourceError: ``source`` is not the analysed volume, or has no Frame of Reference for
            the keypoints.
    """
    source.check_matches(result.geometry)
    point = result.operating_point
    reported = [i for i, v in enumerate(result.vertebrae) if point.is_reported(v.genant_grade)]
    if reported and source.frame_of_reference_uid is None:
        raise DicomSourceError(
            f"the DICOM series in {str(source.folder)!r} has no Frame of Reference UID: the keypoints "
            "cannot be placed in its patient coordinates"
        )
    algorithm = _algorithm(result)
    groups = [
        _spine_group(result, algorithm),
        *(_vertebra_group(result, i, algorithm, str(source.frame_of_reference_uid)) for i in reported),
    ]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_device(result)),
        procedure_reported=codes.SCT.ComputedTomography,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(source.headers),
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE_NAME,
        is_complete=True,
        series_description="vfq vertebral fracture report",
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=VFQ_SCHEME, name="vfq vertebral fracture quantification", version="1"
            )
        ],
    )


def _algorithm(result: StudyResult) -> hd.sr.AlgorithmIdentification:
    point = result.operating_point
    parameters = [f"model {result.model} version {result.model_version or 'unknown'}"]
    weights = weights_sha256()
    if weights is not None:
        parameters.append(f"weights sha256 {weights}")
    parameters += [
        f"fracture threshold {point.fracture_threshold:.2f} (Genant grade >= {point.fracture_grade})",
        f"minimum reported Genant grade {point.min_report_grade}",
    ]
    return hd.sr.AlgorithmIdentification(
        name=SOFTWARE_NAME, version=result.client_version, parameters=parameters
    )


def _device(result: StudyResult) -> hd.sr.ObserverContext:
    """The device observer: vfq and the served model; its UID is fixed by their identity."""
    identity = "/".join([SOFTWARE_NAME, result.client_version, result.model, result.model_version])
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, identity).int}",
            name=SOFTWARE_NAME,
            model_name=result.model,
        ),
    )


def _yes_no(value: bool) -> Code:
    return codes.SCT.Yes if value else codes.SCT.No


def _spine_group(
    result: StudyResult, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study-level group: any fracture at the operating point, or why the study is not assessable."""
    evaluations = []
    if result.not_assessable is None:
        fractured = any(result.is_fractured(v) for v in result.vertebrae)
        evaluations.append(hd.sr.QualitativeEvaluation(VERTEBRAL_FRACTURE, _yes_no(fractured)))
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="spine"),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Spine)],
        qualitative_evaluations=evaluations,
    )
    if result.not_assessable is not None:
        # TID 1501 takes TEXT qualitative evaluations, highdicom's constructor CODE ones only: the
        # reason (free text from the server) is added to the group's container as highdicom builds it.
        reason = hd.sr.TextContentItem(
            name=NOT_ASSESSABLE,
            value=result.not_assessable,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        group[0].ContentSequence.append(reason)
    return group


def _vertebra_group(
    result: StudyResult, index: int, algorithm: hd.sr.AlgorithmIdentification, frame_of_reference_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The group of ``result.vertebrae[index]``: heights with their keypoints, loss, grade and flag."""
    vertebra = result.vertebrae[index]
    site = _level_site(vertebra.level)
    heights = [
        hd.sr.Measurement(
            name=codes.DCM.Height,
            value=height,
            unit=codes.UCUM.Millimeter,
            finding_sites=[hd.sr.FindingSite(site, topographical_modifier=modifier)],
            referenced_coordinates=[
                hd.sr.CoordinatesForMeasurement3D(
                    graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
                    graphic_data=vertebra.keypoints_world[list(pair)],
                    frame_of_reference_uid=frame_of_reference_uid,
                )
            ],
        )
        for height, modifier, pair in zip(vertebra.heights_mm, HEIGHT_SITES, HEIGHT_PAIRS)
    ]
    loss = hd.sr.Measurement(
        name=HEIGHT_LOSS,
        value=100.0 * vertebra.fracture_score,
        unit=codes.UCUM.Percent,
        finding_sites=[hd.sr.FindingSite(site)],
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=vertebra.level or f"vertebra {index + 1} (level unknown)"
        ),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(site)],
        measurements=[*heights, loss],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(GENANT_GRADE, GRADE_VALUES[GenantGrade(vertebra.genant_grade)]),
            hd.sr.QualitativeEvaluation(VERTEBRAL_FRACTURE, _yes_no(result.is_fractured(vertebra))),
        ],
    )


def _level_site(level: str | None) -> Code:
    """The SNOMED CT code of a level, "Vertebra" where it is unknown or has none."""
    try:
        return LEVEL_SITES[Level.parse(level or "")]
    except (ValueError, KeyError):
        return codes.SCT.Vertebra


# ---------------------------------------------------------------------- the key image


def key_image(result: StudyResult, source: DicomSource) -> hd.sc.SCImage:
    """The overlay picture of ``result`` as a Secondary Capture image in the study of ``source``.

    Raises:
        DicomSourceError: ``source`` is not the analysed volume.
    """
    source.check_matches(result.geometry)
    pixels = np.asarray(overlay_picture(result).convert("RGB"), dtype=np.uint8)
    straightened = result.sagittal_image.size > 0
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source.headers[0],
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=hd.UID(),
        series_number=KEY_IMAGE_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE_NAME,
        patient_orientation=STRAIGHTENED_ORIENTATION,
        series_description="vfq key image",
    )
    image.BodyPartExamined = "SPINE"  # an unpaired body part: the series has no Laterality
    if not straightened:
        image.PatientOrientation = ""  # a picture of the reason: no patient direction (type 2, empty)
    return image


# ---------------------------------------------------------------------- writing


def write_dicom_sr(result: StudyResult, source: DicomSource, path: str | os.PathLike[str]) -> Path:
    """Write :func:`structured_report` of ``result`` as a DICOM file (atomically)."""
    return _write_atomically(path, _encoded(structured_report(result, source)))


def write_key_image(result: StudyResult, source: DicomSource, path: str | os.PathLike[str]) -> Path:
    """Write :func:`key_image` of ``result`` as a DICOM file (atomically)."""
    return _write_atomically(path, _encoded(key_image(result, source)))


def _encoded(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
