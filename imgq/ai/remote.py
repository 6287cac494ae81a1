"""Models served by a remote endpoint (IMGQ_AI_REMOTE_ENDPOINTS): another imgq through its
/v1/jobs API (with imgq's own client), or Replicate's predictions API.

Bytes in, bytes out: the operation encodes the image, `run` sends it to the one endpoint the
operator configured for the model, relays the remote's progress, cancels the remote work when the
item stops (cancel, time limit), and returns the result's bytes. What goes wrong is said by
cause, as the worker's retry policy asks (imgq.worker.classify):

- the endpoint out of reach, a timeout, a 5xx or 429, a refused key, a remote job lost or
  cancelled by someone else: RemoteUnavailable, the server's trouble, retried with backoff
  without spending the item's attempts and never blamed on the image;
- the remote refusing or failing this image (a 4xx about the input, a failed prediction):
  RemoteFailed, a failed item carrying the remote's own message.

A single failed look at a running remote job is tried again a few times (with backoff) before
the item is given back to the worker's retry.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

from imgq import client as imgq_client
from imgq.config import RemoteEndpoint
from imgq.errors import Cancelled, RemoteFailed, RemoteUnavailable, TimeLimitExceeded

log = logging.getLogger(__name__)

#: Looks at a running remote job tried in a row before the item is given back to the worker.
POLL_TRIES = 3
#: Remote imgq error codes that are that server's trouble, not the image's.
_REMOTE_INFRASTRUCTURE = frozenset({
    "unavailable", "database_unavailable", "storage_unavailable", "storage_full",
    "storage_read_only", "broker_unavailable", "remote_unavailable", "worker_crashed",
    "out_of_memory", "input_missing", "internal_error"})
#: The basis of an estimate for a remotely served model: its time is the endpoint's.
NOT_ESTIMATED = "served by a remote endpoint: its time is not known here"
_PERCENT = re.compile(r"(\d{1,3})%\|")


@dataclass(frozen=True)
class RemoteOptions:
    """The limits of every remote call (the IMGQ_AI_REMOTE_* settings)."""

    timeout_seconds: float = 30.0
    poll_seconds: float = 1.0
    max_result_bytes: int = 256 * 1024 * 1024
    inline_bytes: int = 256 * 1024


@dataclass(frozen=True)
class RemoteRequest:
    """One model call: the step's operation and parameters, the image (None for generate)
    and the attachments its parameters name (parameter → (file name, bytes))."""

    name: str  # the model name the operator configured
    endpoint: RemoteEndpoint
    token: str | None
    operation: str
    params: Mapping[str, Any]
    image: tuple[str, bytes] | None = None
    attachments: Mapping[str, tuple[str, bytes]] = field(default_factory=dict)


Progress = Callable[[float, str], None]
Abort = Callable[[], bool]
T = TypeVar("T")


def run(request: RemoteRequest, options: RemoteOptions, progress: Progress,
        should_abort: Abort) -> bytes:
    """The result's bytes, from the endpoint configured for the model."""
    if request.endpoint.kind == "imgq":
        return _Imgq(request, options, progress, should_abort).run()
    return _Replicate(request, options, progress, should_abort).run()


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _backoff(attempt: int) -> float:
    return float(min(0.5 * 2.0 ** (attempt - 1), 5.0))


# -- another imgq ---------------------------------------------------------------------------
def _through_outages(look: Callable[[], T], where: str, should_abort: Abort) -> T:
    """A status poll, asked again with backoff while the endpoint cannot be reached (up to
    POLL_TRIES times); a cancel or the time limit stops it instead."""
    for attempt in range(1, POLL_TRIES + 1):
        try:
            return look()
        except RemoteUnavailable:
            if should_abort():  # cancelled or out of time: it stops, not retried
                raise Cancelled(f"stopped while {where} could not be reached") from None
            if attempt == POLL_TRIES:
                raise
            time.sleep(_backoff(attempt))
    raise AssertionError("unreachable")


class _Imgq:
    def __init__(self, request: RemoteRequest, options: RemoteOptions, progress: Progress,
                 should_abort: Abort) -> None:
        self.request, self.options = request, options
        self.progress, self.should_abort = progress, should_abort
        self.where = f"the imgq server at {_host(request.endpoint.url)}"

    def pipeline(self) -> list[dict[str, Any]]:
        request, endpoint = self.request, self.request.endpoint
        step: dict[str, Any] = {"op": request.operation, **request.params, **endpoint.params}
        if "model" in request.params:
            step["model"] = endpoint.model or (request.name if request.operation != "generate"
                                               else None)
            if step["model"] is None:
                del step["model"]
        return [step]

    def run(self) -> bytes:
        request = self.request
        with imgq_client.Client(request.endpoint.url, timeout=self.options.timeout_seconds,
                                api_key=request.token) as remote:
            with self._said(remote):
                job = remote.submit(
                    [request.image] if request.image else [], self.pipeline(),
                    attachments=list(request.attachments.values()),
                    makes_image=request.image is None)
            log.info("item sent to %s as job %s", self.where, job.id)
            try:
                return self._follow(remote, job.id)
            finally:
                self._forget(remote, job.id)

    def _follow(self, remote: imgq_client.Client, job_id: str) -> bytes:
        while True:
            if self.should_abort():
                try:
                    with self._said(remote):
                        remote.cancel(job_id)
                except (RemoteUnavailable, RemoteFailed) as exc:  # the item stops all the same
                    log.warning("could not cancel job %s on %s: %s", job_id, self.where, exc)
                raise Cancelled(f"cancelled; the job on {self.where} was cancelled too")
            item = self._look(remote, job_id)
            stage = item.stage or item.status
            self.progress(item.progress / 100.0, f"{self.request.name} on {self.where}: {stage}")
            if item.status == "succeeded":
                return self._result(remote, job_id, item.index)
            if item.status == "failed":
                raise self._failure(item.error or {})
            if item.status == "cancelled":
                raise RemoteUnavailable(f"{self.where} cancelled the job it was running for "
                                        "this item")
            time.sleep(self.options.poll_seconds)

    def _look(self, remote: imgq_client.Client, job_id: str) -> imgq_client.Item:
        def look() -> imgq_client.Item:
            with self._said(remote):
                return remote.get(job_id).items[0]
        return _through_outages(look, self.where, self.should_abort)

    def _result(self, remote: imgq_client.Client, job_id: str, index: int) -> bytes:
        path, _ = imgq_client.Requests.result(job_id, index)
        with self._said(remote):
            with remote.http.stream("GET", path) as response:
                if response.is_redirect and response.headers.get("location"):
                    # a presigned download (IMGQ_S3_PRESIGNED_DOWNLOADS there): without the key
                    location = str(response.url.join(response.headers["location"]))
                else:
                    if not response.is_success:
                        raise RemoteUnavailable(f"{self.where} answered "
                                                f"{response.status_code} for the result")
                    return _capped(response, self.options.max_result_bytes, self.where)
            with httpx.Client(timeout=self.options.timeout_seconds) as plain, \
                    plain.stream("GET", location) as response:
                if not response.is_success:
                    raise RemoteUnavailable(f"the result's download from {self.where} answered "
                                            f"{response.status_code}")
                return _capped(response, self.options.max_result_bytes, self.where)

    def _failure(self, error: Mapping[str, Any]) -> Exception:
        code, message = str(error.get("code") or "?"), str(error.get("message") or "failed")
        if code in _REMOTE_INFRASTRUCTURE:
            return RemoteUnavailable(f"{self.where} could not process it ({code}: {message})")
        if code == "time_limit":
            return TimeLimitExceeded(f"on {self.where}: {message}")
        return RemoteFailed(f"{self.where}: {message}", remote_code=code)

    def _forget(self, remote: imgq_client.Client, job_id: str) -> None:
        """The remote job's files are of no more use there (best effort)."""
        try:
            remote.delete(job_id)
        except imgq_client.ImgqClientError as exc:
            log.debug("could not delete job %s on %s: %s", job_id, self.where, exc)

    @contextmanager
    def _said(self, remote: imgq_client.Client) -> Iterator[None]:
        """The client's errors, as causes."""
        try:
            yield
        except imgq_client.Unreachable as exc:
            cause = exc.__cause__ or exc
            raise RemoteUnavailable(f"{self.where} could not be reached "
                                    f"({type(cause).__name__})") from exc
        except httpx.TransportError as exc:
            raise RemoteUnavailable(f"{self.where} could not be reached "
                                    f"({type(exc).__name__})") from exc
        except (imgq_client.ServerError, imgq_client.TooManyRequests,
                imgq_client.NotFound, imgq_client.Conflict, imgq_client.Gone) as exc:
            raise RemoteUnavailable(f"{self.where} answered {exc.status} {exc.code}: "
                                    f"{exc.message}") from exc
        except (imgq_client.Unauthorized, imgq_client.Forbidden) as exc:
            raise RemoteUnavailable(
                f"{self.where} refused the key ({exc.status}); the operator must check the "
                f"token {self.request.endpoint.token!r} in IMGQ_AI_REMOTE_TOKENS") from exc
        except imgq_client.ImgqHTTPError as exc:  # 400, 413, 415, 422: about this image
            raise RemoteFailed(f"{self.where} refused it: {exc.message}",
                               remote_code=exc.code) from exc


# -- Replicate ------------------------------------------------------------------------------
#: What a Replicate model gets when the endpoint names no `input`: the image and the step's
#: parameters under the names most models of that kind use.
DEFAULT_INPUT: dict[str, dict[str, Any]] = {
    "upscale": {"image": "{image}", "scale": "{scale}"},
    "remove_background": {"image": "{image}"},
    "style_transfer": {"image": "{image}"},
    "face_swap": {"input_image": "{image}", "swap_image": "{source_face}"},
    "generate": {"prompt": "{prompt}", "negative_prompt": "{negative_prompt}",
                 "width": "{width}", "height": "{height}", "num_inference_steps": "{steps}",
                 "guidance_scale": "{guidance}", "seed": "{seed}"},
}
_WHOLE = re.compile(r"^\{(\w+)\}$")


def replicate_input(template: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction's input: each "{name}" is the value of that name (kept as it is, and
    the field left out when it has none); other strings are formatted with the values; other
    values are sent as they are."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if not isinstance(value, str):
            out[key] = value
            continue
        whole = _WHOLE.match(value)
        if whole:
            if values.get(whole.group(1)) is not None:
                out[key] = values[whole.group(1)]
            continue
        out[key] = value.format_map(values) if "{" in value else value
    return out


def placeholders(template: Mapping[str, Any]) -> set[str]:
    """The names an input template uses."""
    return {name for value in template.values() if isinstance(value, str)
            for name in re.findall(r"\{(\w+)\}", value)}


class _Replicate:
    def __init__(self, request: RemoteRequest, options: RemoteOptions, progress: Progress,
                 should_abort: Abort) -> None:
        self.request, self.options = request, options
        self.progress, self.should_abort = progress, should_abort
        self.base = request.endpoint.url.rstrip("/")
        self.where = f"Replicate at {_host(self.base)}"
        self.http = httpx.Client(timeout=options.timeout_seconds, headers={
            "Authorization": f"Bearer {request.token or ''}"})

    def run(self) -> bytes:
        try:
            prediction = self._create()
            log.info("item sent to %s as prediction %s", self.where, prediction.get("id"))
            output = self._follow(prediction)
            return self._download(output)
        finally:
            self.http.close()

    # creating it --------------------------------------------------------------------------
    def _create(self) -> dict[str, Any]:
        endpoint = self.request.endpoint
        body: dict[str, Any] = {"input": self._input()}
        if endpoint.version:
            body["version"] = endpoint.version
            path = "/predictions"
        else:
            owner, _, name = endpoint.model.partition("/")
            path = f"/models/{quote(owner)}/{quote(name)}/predictions"
        return self._json(self._call("POST", self.base + path, json=body))

    def _input(self) -> dict[str, Any]:
        request = self.request
        values: dict[str, Any] = {k: v for k, v in request.params.items()}
        if request.image is not None:
            values["image"] = self._file(*request.image)
        for param, (file_name, data) in request.attachments.items():
            values[param] = self._file(file_name, data)
        template = request.endpoint.input or DEFAULT_INPUT.get(request.operation,
                                                               {"image": "{image}"})
        return replicate_input(template, values)

    def _file(self, name: str, data: bytes) -> str:
        """A data URI for a small file; a larger one goes through the files API first."""
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if len(data) <= self.options.inline_bytes:
            return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
        answer = self._json(self._call("POST", f"{self.base}/files",
                                       files={"content": (name, data, kind)}))
        url = (answer.get("urls") or {}).get("get")
        if not isinstance(url, str):
            raise RemoteUnavailable(f"{self.where} did not say where the uploaded file is")
        return url

    # following it -------------------------------------------------------------------------
    def _follow(self, prediction: dict[str, Any]) -> Any:
        get_url, cancel_url = self._urls(prediction)
        while True:
            status = prediction.get("status")
            if status == "succeeded":
                return prediction.get("output")
            if status == "failed":
                raise RemoteFailed(f"{self.where}: the prediction failed: "
                                   f"{prediction.get('error') or 'no reason given'}")
            if status == "canceled":
                raise RemoteUnavailable(f"{self.where} canceled the prediction")
            if self.should_abort():
                try:
                    self._call("POST", cancel_url)
                except (RemoteUnavailable, RemoteFailed) as exc:  # the item stops all the same
                    log.warning("could not cancel prediction %s on %s: %s",
                                prediction.get("id"), self.where, exc)
                raise Cancelled(f"cancelled; the prediction on {self.where} was canceled too")
            self.progress(self._fraction(prediction),
                          f"{self.request.name} on {self.where}: {status}")
            time.sleep(self.options.poll_seconds)
            prediction = self._look(get_url)

    def _urls(self, prediction: dict[str, Any]) -> tuple[str, str]:
        """Where to look and cancel: the prediction's own URLs when they are the configured
        endpoint's, built from its id otherwise (nothing else is ever sent the token)."""
        urls = prediction.get("urls") or {}
        ident = quote(str(prediction.get("id") or ""))
        if not ident:
            raise RemoteUnavailable(f"{self.where} answered a prediction without an id")
        get_url = urls.get("get") if self._ours(urls.get("get")) else None
        cancel_url = urls.get("cancel") if self._ours(urls.get("cancel")) else None
        return (get_url or f"{self.base}/predictions/{ident}",
                cancel_url or f"{self.base}/predictions/{ident}/cancel")

    def _ours(self, url: Any) -> bool:
        return isinstance(url, str) and url.startswith(self.base + "/")

    def _look(self, url: str) -> dict[str, Any]:
        return _through_outages(lambda: self._json(self._call("GET", url)), self.where,
                                self.should_abort)

    @staticmethod
    def _fraction(prediction: dict[str, Any]) -> float:
        """The model's own progress bar, when its logs show one (tqdm's "42%|")."""
        found = _PERCENT.findall(str(prediction.get("logs") or ""))
        return min(100, int(found[-1])) / 100.0 if found else 0.0

    # the result ---------------------------------------------------------------------------
    def _download(self, output: Any) -> bytes:
        url = _first_file(output)
        if url is None:
            raise RemoteFailed(f"{self.where}: the prediction succeeded without an output file")
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            if not head.endswith(";base64"):
                raise RemoteFailed(f"{self.where}: the output is not a base64 data URI")
            if len(payload) * 3 // 4 > self.options.max_result_bytes:
                raise RemoteFailed(f"{self.where}: the output is larger than "
                                   f"{self.options.max_result_bytes} bytes")
            return base64.b64decode(payload)
        if urlsplit(url).scheme not in ("http", "https"):
            raise RemoteFailed(f"{self.where}: the output is not a URL")
        # The output is downloaded from where the endpoint says it is; the token goes only to
        # the endpoint itself.
        http = self.http if self._ours(url) else httpx.Client(
            timeout=self.options.timeout_seconds)
        try:
            with http.stream("GET", url) as response:
                if not response.is_success:
                    raise RemoteUnavailable(f"{self.where}: the output could not be downloaded "
                                            f"({response.status_code})")
                return _capped(response, self.options.max_result_bytes, self.where)
        except httpx.TransportError as exc:
            raise RemoteUnavailable(f"{self.where}: the output could not be downloaded "
                                    f"({type(exc).__name__})") from exc
        finally:
            if http is not self.http:
                http.close()

    # HTTP ---------------------------------------------------------------------------------
    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise RemoteUnavailable(f"{self.where} could not be reached "
                                    f"({type(exc).__name__})") from exc
        status = response.status_code
        if response.is_success:
            return response
        detail = _detail(response)
        if status in (401, 403):
            raise RemoteUnavailable(
                f"{self.where} refused the token ({status}: {detail}); the operator must check "
                f"{self.request.endpoint.token!r} in IMGQ_AI_REMOTE_TOKENS")
        if status == 404:
            raise RemoteUnavailable(f"{self.where} does not know the model or prediction "
                                    f"({detail}); the operator must check the endpoint of "
                                    f"{self.request.name}")
        if status == 429 or status >= 500:
            raise RemoteUnavailable(f"{self.where} answered {status}: {detail}")
        raise RemoteFailed(f"{self.where} refused it: {detail}", remote_status=status)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RemoteUnavailable(f"{self.where} answered something that is not JSON")
        return data


def _detail(response: httpx.Response) -> str:
    """Replicate's problem details (`detail`, `title`), or the status text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = body.get("detail") or body.get("title") or body.get("error")
        if text:
            return str(text)[:500]
    return response.reason_phrase or str(response.status_code)


def _first_file(output: Any) -> str | None:
    """The first file of a prediction's output: a URL, a list of them, or an object of them."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return next((u for u in (_first_file(o) for o in output) if u), None)
    if isinstance(output, dict):
        return next((u for u in (_first_file(o) for o in output.values()) if u), None)
    return None


def _capped(response: httpx.Response, limit: int, where: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RemoteFailed(f"{where}: the result is {declared} bytes, more than "
                           f"IMGQ_AI_REMOTE_MAX_RESULT_BYTES ({limit})")
    buffer = bytearray()
    for chunk in response.iter_bytes():
        buffer += chunk
        if len(buffer) > limit:
            raise RemoteFailed(f"{where}: the result is more than "
                               f"IMGQ_AI_REMOTE_MAX_RESULT_BYTES ({limit}) bytes")
    return bytes(buffer)
