"""Offline tools over recorded videos and photos rather than a live camera.

Labelled datasets (``dataset``, ``runner``), per-point uncertainty (``uncertainty``), textured 3D export
(``mesh_export``), and per-frame eye and lip contours personalised from annotated frames.

The contour workflow as a Python API (the ``facewire contours`` commands call the same functions)::

    from facewire.tracker.offline import (ComputeSettings, Project, compute_project, detect_sequence,
                                          export_project)
    project = detect_sequence("clip.mp4", "proj", 0, 500)        # precomputed/NAME.json per frame
    ...                                                         # annotate: proj/annotations.json
    compute_project(project, settings=ComputeSettings())        # computed/NAME.json per frame
    export_project(project, Path("out"), prefer="training", coordinates="pixels")
"""
from .annotations import AnnotationError, TrainingFrame, load_annotations, save_annotations, training_from_segment
from .compute import compute_project
from .contour_json import ContourFormatError, ContourFrame, Project, read_frame, write_frame
from .contours import SEGMENTS, ContourError, Segment, face_segments
from .detect import DetectOptions, detect_sequence
from .exchange import export_project, import_files
from .inner_lips import PRESETS, InnerLipOptions
from .personalise import ComputeSettings

__all__ = ["AnnotationError", "ComputeSettings", "ContourError", "ContourFormatError", "ContourFrame",
           "DetectOptions", "InnerLipOptions", "PRESETS", "Project", "SEGMENTS", "Segment", "TrainingFrame",
           "compute_project", "detect_sequence", "export_project", "face_segments", "import_files",
           "load_annotations", "read_frame", "save_annotations", "training_from_segment", "write_frame"]
