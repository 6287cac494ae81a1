"""Errors of the AI runtime, as branches of imgq's one exception tree."""

from __future__ import annotations

from imgq.errors import Cancelled, NotFound, ProcessingError, Unavailable


class ModelNotFound(NotFound):
    """No model with this name is known."""

    code = "model_not_found"


class ModelLoadError(ProcessingError):
    """The model's weights could not be loaded."""

    code = "model_load_error"


class UnsupportedModel(ModelLoadError):
    """This model file is not a supported image model."""

    code = "unsupported_model"


class AIUnavailable(Unavailable):
    """AI operations are not available on this server."""

    code = "ai_unavailable"
    # A missing package or a missing plug-in does not fix itself by retrying.
    transient = False


class DeviceUnavailable(AIUnavailable):
    """The requested compute device is not available."""

    code = "device_unavailable"


class InferenceAborted(Cancelled):
    """The model run was stopped between tiles."""

    code = "inference_aborted"


class OutOfMemory(ProcessingError):
    """Not enough memory to run the model, even with the smallest tile."""

    code = "out_of_memory"


class NoFaceFound(ProcessingError):
    """No face was found in the picture."""

    code = "no_face"
