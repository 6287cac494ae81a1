"""The operation interface, the registry, and pipeline validation against it."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from imgq.domain.names import with_extension
from imgq.domain.pipeline import StepSpec
from imgq.errors import InvalidParameters, InvalidPipeline, InvalidRequest, OutputTooLarge
from imgq.ops.image import Image

Resource = Literal["cpu", "gpu"]


class Params(BaseModel):
    """Base of every operation's parameters: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def restore(cls, stored: dict[str, Any]) -> Params:
        """Parameters as `BoundStep.to_dict` stored them, already validated at submit: trusted,
        not validated again (a default changed by a later release never changes a queued job)."""
        return cls.model_construct(**stored)


class NoParams(Params):
    pass


class StepContext(Protocol):
    """What a running step may use: report progress, and ask whether to stop."""

    def progress(self, fraction: float, stage: str | None = None) -> None: ...

    def should_abort(self) -> bool: ...

    def check(self) -> None:
        """Raise Cancelled or TimeLimitExceeded when the item must stop."""
        ...

    def attachment(self, name: str) -> Image:
        """One of the job's attachments (an extra image sent in the 'attachments' field, such
        as a style picture or a face), decoded."""
        ...


class NullContext:
    def progress(self, fraction: float, stage: str | None = None) -> None:
        pass

    def should_abort(self) -> bool:
        return False

    def check(self) -> None:
        pass

    def attachment(self, name: str) -> Image:
        raise InvalidParameters(f"no attachment named {name!r}")


class Operation:
    """One image operation. Subclasses set the class attributes and implement `apply`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    params_model: ClassVar[type[Params]] = NoParams
    resource: ClassVar[Resource] = "cpu"
    #: Set when the operation is offered but cannot run here; the text says why.
    unavailable_reason: ClassVar[str | None] = None
    #: Parameters whose value is the file name of one of the job's attachments.
    attachment_params: ClassVar[tuple[str, ...]] = ()
    #: True when the operation makes an image from nothing (text-to-image): it can only be the
    #: first step of a job sent with no files, and `create` runs instead of `apply`.
    makes_image: ClassVar[bool] = False
    #: For a gpu step: True when items running side by side in one worker process
    #: (IMGQ_AI_ITEMS_IN_FLIGHT) may run it at the same time, from their threads. A gpu step
    #: that does not say so runs for one item at a time per process (its model object may keep
    #: state between calls, as a diffusers pipeline's scheduler does).
    concurrent: ClassVar[bool] = False

    @property
    def remote_models(self) -> dict[str, str]:
        """Models of this operation served by a remote endpoint: name → where (kind, host,
        remote model; never a secret)."""
        return {}

    def apply(self, image: Image, params: Any, ctx: StepContext) -> Image:
        raise NotImplementedError

    def create(self, params: Any, ctx: StepContext) -> Image:
        raise NotImplementedError

    def output_size(self, width: int, height: int, params: Any) -> tuple[int, int]:
        """The size of the image this step makes from a width×height one; the default keeps
        it. An operation that changes the size must say how: pipelines are checked with it
        when submitted (IMGQ_MAX_OUTPUT_PIXELS), before any pixel is computed."""
        return width, height

    def margin(self, params: Any) -> int:
        """How many pixels around each output pixel the step reads (0: pixel by pixel).
        The runner uses it to keep chained neighbourhood filters from recomputing."""
        return 0

    def name_suffix(self, params: Any) -> str:
        """What the result's download name gets for this step ("@4x" for an upscale ×4);
        steps that only filter or convert leave the name alone."""
        return ""

    def load(self, path: Path, fmt: str, params: Any) -> Image | None:
        """Optionally decode and apply at once (shrink-on-load); None means not possible."""
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "resource": self.resource,
            "available": self.unavailable_reason is None,
            "unavailable_reason": self.unavailable_reason,
            "makes_image": self.makes_image,
            "remote": self.remote_models,
            "attachments": list(self.attachment_params),
            "params": self.params_model.model_json_schema(),
        }


@dataclass(frozen=True)
class BoundStep:
    op: Operation
    params: Params

    @property
    def name(self) -> str:
        return self.op.name

    def to_dict(self) -> dict[str, Any]:
        """The step as stored and shown: every parameter, defaults filled and aliases resolved."""
        return {"op": self.op.name, **self.params.model_dump(mode="json")}


def result_name(input_name: str, steps: list[BoundStep], ext: str) -> str:
    """photo480.jpg upscaled ×4 → photo480@4x.jpg; the extension is the output format's."""
    suffix = "".join(step.op.name_suffix(step.params) for step in steps)
    name = with_extension(input_name, ext)
    return f"{name[:-len(ext) - 1]}{suffix}.{ext}"


class Registry:
    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}

    def add(self, op: Operation) -> None:
        if op.name in self._ops:
            raise ValueError(f"operation {op.name!r} is already registered")
        self._ops[op.name] = op

    def get(self, name: str) -> Operation:
        try:
            return self._ops[name]
        except KeyError:
            raise InvalidPipeline(
                f"unknown operation {name!r}; known: {', '.join(sorted(self._ops))}"
            ) from None

    def __iter__(self) -> Iterator[Operation]:
        return iter(sorted(self._ops.values(), key=lambda op: op.name))

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def bind(self, steps: list[StepSpec]) -> list[BoundStep]:
        """Validate every step's parameters; 422 naming the step and the field at fault."""
        return [self._bind_one(i, spec) for i, spec in enumerate(steps)]

    def _bind_one(self, index: int, spec: StepSpec) -> BoundStep:
        op = self.get(spec.op)
        if op.unavailable_reason:
            raise InvalidPipeline(f"step {index} ({op.name}): unavailable: {op.unavailable_reason}")
        try:
            params = op.params_model.model_validate(spec.params)
        except ValidationError as exc:
            raise InvalidParameters(_describe(index, op.name, exc), step=index, op=op.name) from None
        return BoundStep(op, params)

    def check_inputs(self, steps: list[BoundStep], files: int, attachments: Collection[str]
                     ) -> None:
        """The files a job sends must suit its pipeline: none when it starts by making an
        image, at least one otherwise, and every attachment a step names."""
        for index, step in enumerate(steps):
            if step.op.makes_image and index > 0:
                raise InvalidPipeline(f"step {index} ({step.name}) makes a new image, so it can "
                                      "only be the first step")
            for param in step.op.attachment_params:
                wanted = getattr(step.params, param, None)
                if wanted is not None and wanted not in attachments:
                    raise InvalidParameters(
                        f"step {index} ({step.name}): {param}: no attachment named {wanted!r}; "
                        "send that image in the 'attachments' field, with that file name",
                        step=index, op=step.name)
        makes = bool(steps) and steps[0].op.makes_image
        if makes and files:
            raise InvalidPipeline(f"step 0 ({steps[0].name}) makes a new image from nothing: "
                                  "send the job with no files")
        if not makes and not files:
            raise InvalidRequest("no files: send one or more images in the 'files' field (only "
                                 "a pipeline that starts by making an image, such as generate, "
                                 "needs none)")

    def restore(self, stored: list[dict[str, Any]]) -> list[BoundStep]:
        """The steps of a stored pipeline, for the worker: no validation, only a check that each
        operation can run here (InvalidPipeline naming the step otherwise)."""
        steps = []
        for index, raw in enumerate(stored):
            params = dict(raw)
            op = self.get(str(params.pop("op", "")))
            if op.unavailable_reason:
                raise InvalidPipeline(f"step {index} ({op.name}) cannot run on this worker: "
                                      f"{op.unavailable_reason}")
            steps.append(BoundStep(op, op.params_model.restore(params)))
        return steps

    def resource_of(self, steps: list[BoundStep]) -> Resource:
        return "gpu" if any(s.op.resource == "gpu" for s in steps) else "cpu"


def _describe(index: int, name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "parameters"
        msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{field}: {msg}")
    return f"step {index} ({name}): " + "; ".join(parts)


def refuse_large_outputs(steps: list[BoundStep], name: str, width: int, height: int,
                         max_pixels: int) -> None:
    """OutputTooLarge (413) naming the first step that would make more than `max_pixels`."""
    for index, step in enumerate(steps):
        width, height = step.op.output_size(width, height, step.params)
        if width * height > max_pixels:
            raise OutputTooLarge(
                f"{name}: step {index} ({step.name}) would make a {width}×{height} image, "
                f"{width * height:,} pixels, more than the limit of {max_pixels:,} pixels "
                "(IMGQ_MAX_OUTPUT_PIXELS)", file=name, step=index, width=width, height=height)
