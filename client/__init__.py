"""Facewire client SDK: the wire formats the tracker sends, their receivers and helpful views.

Light by design: never OpenCV or onnxruntime, so applications can consume tracking data without the
tracker's dependencies. OpenSeeFace's format needs only numpy and the standard library; the receivers
of the other formats (``MsgpackReceiver``, ``ZmqSubscriber``, ``IFacialMocapReceiver``) and
``make_keypair`` are imported on first use, so ``import facewire.client`` does not load msgpack or pyzmq.
"""

from .protocol import (
    FEATURE_NAMES,
    NUM_POINTS,
    NUM_POINTS_3D,
    RECORD_DTYPE,
    RECORD_SIZE,
    DatagramError,
    OpenSeeFaceRecord,
    RecordError,
    decode_array,
    decode_datagram,
    encode_datagram,
    encode_record,
)
from .calibration import (
    CalibrationStats,
    ExpressionCalibrator,
    ModelFileError,
    NotEnoughDataError,
    NotTrainedError,
    Prediction,
    UnusableFrameError,
)
from .receiver import DatagramReceiver, OpenSeeFaceReceiver, ReceiverError, ReceiverStats
from .views import (
    OSF_TO_IBUG68,
    R_FRONTAL,
    GazeVectors,
    HeadAngles,
    PoseUnavailableError,
    angles_from_rotation,
    from_ibug68,
    gaze_vectors,
    has_pose,
    head_angles,
    head_rotation,
    head_rotation_to_osf,
    osf_euler,
    osf_quaternion,
    osf_rotation_matrix,
    rotation_from_angles,
    to_ibug68,
)

#: Exported names whose modules load on first use (msgpack, pyzmq): name -> module.
_LAZY = {
    "ARKIT_NAMES": "arkit",
    "MsgpackFace": "msgpack_frame",
    "MsgpackFrame": "msgpack_frame",
    "MsgpackReceiver": "msgpack_receiver",
    "ZmqSubscriber": "zmq_stream",
    "CurveKeyError": "zmq_stream",
    "make_keypair": "zmq_stream",
    "IFacialMocapFrame": "ifacialmocap",
    "IFacialMocapReceiver": "ifacialmocap_receiver",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    *_LAZY,
    "CalibrationStats",
    "ExpressionCalibrator",
    "ModelFileError",
    "NotEnoughDataError",
    "NotTrainedError",
    "Prediction",
    "UnusableFrameError",
    "DatagramError",
    "DatagramReceiver",
    "FEATURE_NAMES",
    "GazeVectors",
    "HeadAngles",
    "NUM_POINTS",
    "NUM_POINTS_3D",
    "OSF_TO_IBUG68",
    "OpenSeeFaceReceiver",
    "OpenSeeFaceRecord",
    "PoseUnavailableError",
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "R_FRONTAL",
    "ReceiverError",
    "ReceiverStats",
    "RecordError",
    "angles_from_rotation",
    "decode_array",
    "decode_datagram",
    "encode_datagram",
    "encode_record",
    "from_ibug68",
    "gaze_vectors",
    "has_pose",
    "head_angles",
    "head_rotation",
    "head_rotation_to_osf",
    "osf_euler",
    "osf_quaternion",
    "osf_rotation_matrix",
    "rotation_from_angles",
    "to_ibug68",
]
