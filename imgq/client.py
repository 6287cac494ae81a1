"""A Python client for imgq, sync (`Client`) and async (`AsyncClient`), on httpx.

Both faces send the same calls (`Requests`: each request and how to read its answer) and follow
a job the same way (`Follower`); they differ only in how they wait for the network.

    from imgq.client import Client

    with Client("http://127.0.0.1:8000") as imgq:
        job = imgq.submit(["a.jpg", "b.png"], "resize:width=800|encode:format=webp")
        job = imgq.wait(job.id)                 # live events, falling back to polling
        imgq.download_all(job.id, "out/")       # or imgq.download_archive(job.id, "out.zip")

Refusals raise a subclass of `ImgqHTTPError` carrying the server's `code` and `message`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar, Union

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
ACTIVE = frozenset({"queued", "running"})
POLL_INTERVAL = 1.0
STREAM_RETRIES = 3

FileArg = Union[str, Path, tuple[str, Union[bytes, IO[bytes]]]]
Pipeline = Union[str, Sequence[dict[str, Any]]]
T = TypeVar("T")


# -- errors ---------------------------------------------------------------------------------
class ImgqClientError(Exception):
    """Base of every error this client raises."""


class ImgqHTTPError(ImgqClientError):
    """The server refused: `status`, its stable `code` and a `message` safe to show."""

    def __init__(self, status: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or {}


class BadRequest(ImgqHTTPError):
    """400: the request is malformed."""


class Unauthorized(ImgqHTTPError):
    """401: the server needs an API key (`api_key=`), or the one given is unknown or revoked."""


class Forbidden(ImgqHTTPError):
    """403: this needs an admin key."""


class NotFound(ImgqHTTPError):
    """404: no such job or item (or not one of this key's)."""


class Conflict(ImgqHTTPError):
    """409: not in a state that allows this (e.g. no result yet)."""


class Gone(ImgqHTTPError):
    """410: the job's files expired and were removed."""


class TooLarge(ImgqHTTPError):
    """413: too many files, a file too large, or too many pixels."""


class UnsupportedMediaType(ImgqHTTPError):
    """415: a file is not an image in a supported format."""


class InvalidPipeline(ImgqHTTPError):
    """422: the pipeline or a parameter is invalid."""


class TooManyRequests(ImgqHTTPError):
    """429: a quota of the key or the rate limit of an address; `retry_after` in seconds."""

    retry_after: float | None = None


class ServerError(ImgqHTTPError):
    """5xx: the server failed or a dependency is down."""


class Unreachable(ImgqClientError):
    """The server could not be reached: not running, a wrong URL, or the network."""

    def __init__(self, base_url: str, exc: Exception) -> None:
        reason = str(exc).strip() or type(exc).__name__
        super().__init__(f"cannot reach the imgq server at {base_url} ({reason})")
        self.base_url = base_url


class WaitTimeout(ImgqClientError):
    """The job did not finish in the time given."""


_BY_STATUS: dict[int, type[ImgqHTTPError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    410: Gone, 413: TooLarge, 415: UnsupportedMediaType, 422: InvalidPipeline,
    429: TooManyRequests,
}


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json().get("error") or {}
    except (ValueError, AttributeError):
        body = {}
    code = str(body.get("code") or "http_error")
    message = str(body.get("message") or response.reason_phrase or "request failed")
    kind = _BY_STATUS.get(response.status_code,
                          ServerError if response.status_code >= 500 else ImgqHTTPError)
    error = kind(response.status_code, code, message, body.get("details"))
    if isinstance(error, TooManyRequests) and response.headers.get("retry-after", "").isdigit():
        error.retry_after = float(response.headers["retry-after"])
    raise error


# -- what the server answers ----------------------------------------------------------------
@dataclass
class Item:
    index: int
    name: str
    status: str
    progress: int
    stage: str | None
    error: dict[str, Any] | None
    result_url: str | None
    result_name: str | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Item:
        return cls(index=data["index"], name=data["name"], status=data["status"],
                   progress=data["progress"], stage=data.get("stage"), error=data.get("error"),
                   result_url=data.get("result_url"), result_name=data.get("result_name"),
                   raw=data)

    @property
    def error_message(self) -> str | None:
        return self.error.get("message") if self.error else None


@dataclass
class Job:
    id: str
    status: str
    progress: int
    expires_at: str
    items: list[Item]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(id=data["id"], status=data["status"], progress=data["progress"],
                   expires_at=data["expires_at"],
                   items=[Item.from_json(i) for i in data.get("items", [])], raw=data)

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE


@dataclass(frozen=True)
class Event:
    """One server-sent event: `item`, `job` or `done` (see GET /v1/jobs/{id}/events)."""

    event: str
    data: Any
    id: str | None = None


class SSEParser:
    """Turns the lines of a text/event-stream into events."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None

    def feed(self, line: str) -> Event | None:
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            text = "\n".join(self._data)
            event = Event(self._event, json.loads(text) if text[:1] in "{[" else text, self._id)
            self._event, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = self.last_id = value
        return None


# -- the core: what to ask and how to read the answer, with no I/O ---------------------------
@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its answer; both faces send it their own way."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: dict[str, str] | None = None
    data: dict[str, str] | None = None


def _job(data: Any) -> Job:
    return Job.from_json(data)


def _nothing(data: Any) -> None:
    return None


def _as_is(data: Any) -> Any:
    return data


class Requests:
    """Every call of the API, as data. `Client` and `AsyncClient` only send them."""

    @staticmethod
    def submit(pipeline: Pipeline, ttl_seconds: int | None, callback_url: str | None) -> Call[Job]:
        data = {"pipeline": pipeline if isinstance(pipeline, str) else json.dumps(list(pipeline))}
        if ttl_seconds is not None:
            data["ttl_seconds"] = str(ttl_seconds)
        if callback_url:
            data["callback_url"] = callback_url
        return Call("POST", "/v1/jobs", _job, data=data)

    @staticmethod
    def get(job_id: str) -> Call[Job]:
        return Call("GET", f"/v1/jobs/{job_id}", _job)

    @staticmethod
    def get_many(job_ids: Sequence[str]) -> Call[list[Job]]:
        return Call("GET", "/v1/jobs", lambda d: [Job.from_json(j) for j in d["jobs"]],
                    params={"ids": ",".join(job_ids)})

    @staticmethod
    def cancel(job_id: str) -> Call[Job]:
        return Call("POST", f"/v1/jobs/{job_id}/cancel", _job)

    @staticmethod
    def delete(job_id: str) -> Call[None]:
        return Call("DELETE", f"/v1/jobs/{job_id}", _nothing)

    @staticmethod
    def operations() -> Call[list[dict[str, Any]]]:
        return Call("GET", "/v1/operations", _as_is)

    @staticmethod
    def limits() -> Call[dict[str, Any]]:
        return Call("GET", "/v1/limits", _as_is)

    @staticmethod
    def events(job_id: str, last_event_id: str | None) -> tuple[str, dict[str, str]]:
        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        return f"/v1/jobs/{job_id}/events", headers

    @staticmethod
    def result(job_id: str, index: int) -> tuple[str, str]:
        return f"/v1/jobs/{job_id}/items/{index}/result", f"result-{index}"

    @staticmethod
    def archive(job_id: str) -> tuple[str, str]:
        return f"/v1/jobs/{job_id}/archive", f"imgq-{job_id[:8]}.zip"


EVENTS_TIMEOUT = httpx.Timeout(10.0, read=60.0)
STREAM_BROKE = (httpx.TransportError, httpx.StreamError, ServerError, ValueError)


class Follower:
    """The state of `wait`: the last event seen, the caller's callback, the deadline."""

    def __init__(self, job_id: str, timeout: float | None,
                 on_event: Callable[[Event], None] | None) -> None:
        self.job_id, self.timeout, self.on_event = job_id, timeout, on_event
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last_id: str | None = None

    def seen(self, event: Event) -> Job | None:
        """The finished job when `event` ends the stream, else None."""
        self.last_id = event.id or self.last_id
        if self.on_event:
            self.on_event(event)
        if event.event == "done":
            return Job.from_json(event.data)
        self.check_deadline()
        return None

    def polled(self, job: Job) -> bool:
        if self.on_event:
            self.on_event(Event("done" if job.finished else "job", job.raw))
        if not job.finished:
            self.check_deadline()
        return job.finished

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise WaitTimeout(f"job {self.job_id} did not finish in {self.timeout} s")


def _files(stack: ExitStack, files: Iterable[FileArg], attachments: Iterable[FileArg] = (),
           makes_image: bool = False) -> list[tuple[str, tuple[str | None, Any]]]:
    out: list[tuple[str, tuple[str | None, Any]]] = []
    for field_name, group in (("files", files), ("attachments", attachments)):
        for f in group:
            if isinstance(f, (str, Path)):
                path = Path(f)
                out.append((field_name, (path.name, stack.enter_context(path.open("rb")))))
            else:
                out.append((field_name, (f[0], f[1])))
    if not makes_image and not any(name == "files" for name, _ in out):
        raise ValueError("give at least one file (or makes_image=True for a pipeline that "
                         "starts by making an image, such as generate)")
    # httpx sends a form without files URL-encoded; the API reads multipart/form-data only.
    return out or [("_", (None, b""))]


def _target(dest: str | Path, name: str | None) -> Path:
    path = Path(dest)
    if path.is_dir() or str(dest).endswith(("/", "\\")):
        path.mkdir(parents=True, exist_ok=True)
        return path / Path(name or "result").name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _download_name(response: httpx.Response, fallback: str) -> str:
    header = response.headers.get("content-disposition", "")
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "filename":
            return Path(value.strip('"')).name or fallback
    return fallback


def _answer(response: httpx.Response) -> Any:
    _raise_for(response)
    return response.json() if response.content else None


# -- sync -----------------------------------------------------------------------------------
def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client:
    """api_key: the key of a server run with IMGQ_AUTH=keys."""

    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 60.0,
                 http: httpx.Client | None = None, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout,
                                         headers=_auth_headers(api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def send(self, call: Call[T], **kw: Any) -> T:
        try:
            response = self.http.request(call.method, call.path, params=call.params,
                                         data=call.data, **kw)
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, exc) from exc
        return call.read(_answer(response))

    def submit(self, files: Iterable[FileArg], pipeline: Pipeline, ttl_seconds: int | None = None,
               callback_url: str | None = None, attachments: Iterable[FileArg] = (),
               makes_image: bool = False) -> Job:
        """Upload files (paths, or (name, bytes or file) pairs) with a pipeline; `attachments`
        are extra images its steps name (a style picture, a face); `makes_image` allows no
        files for a pipeline that starts with generate."""
        with ExitStack() as stack:
            return self.send(Requests.submit(pipeline, ttl_seconds, callback_url),
                             files=_files(stack, files, attachments, makes_image))

    def get(self, job_id: str) -> Job:
        return self.send(Requests.get(job_id))

    def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        return self.send(Requests.get_many(job_ids))

    def cancel(self, job_id: str) -> Job:
        return self.send(Requests.cancel(job_id))

    def delete(self, job_id: str) -> None:
        self.send(Requests.delete(job_id))

    def operations(self) -> list[dict[str, Any]]:
        return self.send(Requests.operations())

    def limits(self) -> dict[str, Any]:
        return self.send(Requests.limits())

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's live events until `done` (one connection; see `wait` for retries)."""
        path, headers = Requests.events(job_id, last_event_id)
        with self.http.stream("GET", path, headers=headers, timeout=EVENTS_TIMEOUT) as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            parser = SSEParser()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event

    def wait(self, job_id: str, timeout: float | None = None,
             on_event: Callable[[Event], None] | None = None) -> Job:
        """Until the job finishes: live events, resumed after a dropped connection, then
        polling if the stream cannot be had. `on_event` sees every event (polling makes
        `job` events with the whole job)."""
        follow = Follower(job_id, timeout, on_event)
        for _ in range(STREAM_RETRIES):
            try:
                for event in self.events(job_id, follow.last_id):
                    if (finished := follow.seen(event)) is not None:
                        return finished
            except STREAM_BROKE:
                pass  # the stream broke: resume from last_id, or poll after a few tries
        while not follow.polled(job := self.get(job_id)):
            time.sleep(POLL_INTERVAL)
        return job

    def download(self, job_id: str, index: int, dest: str | Path) -> Path:
        """One result into `dest` (a folder: keeps the server's name; else that file)."""
        return self._save(*Requests.result(job_id, index), dest)

    def download_archive(self, job_id: str, dest: str | Path) -> Path:
        return self._save(*Requests.archive(job_id), dest)

    def download_all(self, job_id: str, folder: str | Path) -> list[Path]:
        """Every finished result of the job into a folder."""
        job = self.get(job_id)
        Path(folder).mkdir(parents=True, exist_ok=True)
        return [self.download(job_id, i.index, folder) for i in job.items if i.result_url]

    def _save(self, path: str, fallback: str, dest: str | Path) -> Path:
        with self.http.stream("GET", path) as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            target = _target(dest, _download_name(response, fallback))
            with target.open("wb") as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
        return target


# -- async: the same calls, awaited ------------------------------------------------------------
class AsyncClient:
    """api_key: the key of a server run with IMGQ_AUTH=keys."""

    def __init__(self, base_url: str = DEFAULT_URL, timeout: float = 60.0,
                 http: httpx.AsyncClient | None = None, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout,
                                              headers=_auth_headers(api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def send(self, call: Call[T], **kw: Any) -> T:
        try:
            response = await self.http.request(call.method, call.path, params=call.params,
                                               data=call.data, **kw)
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, exc) from exc
        return call.read(_answer(response))

    async def submit(self, files: Iterable[FileArg], pipeline: Pipeline,
                     ttl_seconds: int | None = None, callback_url: str | None = None,
                     attachments: Iterable[FileArg] = (), makes_image: bool = False) -> Job:
        """Upload files (paths, or (name, bytes or file) pairs) with a pipeline (see
        `Client.submit`)."""
        with ExitStack() as stack:
            # httpx sends sync file objects from an async client by reading them in chunks.
            return await self.send(Requests.submit(pipeline, ttl_seconds, callback_url),
                                   files=_files(stack, files, attachments, makes_image))

    async def get(self, job_id: str) -> Job:
        return await self.send(Requests.get(job_id))

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        return await self.send(Requests.get_many(job_ids))

    async def cancel(self, job_id: str) -> Job:
        return await self.send(Requests.cancel(job_id))

    async def delete(self, job_id: str) -> None:
        await self.send(Requests.delete(job_id))

    async def operations(self) -> list[dict[str, Any]]:
        return await self.send(Requests.operations())

    async def limits(self) -> dict[str, Any]:
        return await self.send(Requests.limits())

    async def events(self, job_id: str, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The job's live events until `done` (one connection; see `wait` for retries)."""
        path, headers = Requests.events(job_id, last_event_id)
        async with self.http.stream("GET", path, headers=headers,
                                    timeout=EVENTS_TIMEOUT) as response:
            if not response.is_success:
                await response.aread()
                _raise_for(response)
            parser = SSEParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event

    async def wait(self, job_id: str, timeout: float | None = None,
                   on_event: Callable[[Event], None] | None = None) -> Job:
        """As `Client.wait`."""
        follow = Follower(job_id, timeout, on_event)
        for _ in range(STREAM_RETRIES):
            try:
                async for event in self.events(job_id, follow.last_id):
                    if (finished := follow.seen(event)) is not None:
                        return finished
            except STREAM_BROKE:
                pass
        while not follow.polled(job := await self.get(job_id)):
            await asyncio.sleep(POLL_INTERVAL)
        return job

    async def download(self, job_id: str, index: int, dest: str | Path) -> Path:
        """One result into `dest` (a folder: keeps the server's name; else that file)."""
        return await self._save(*Requests.result(job_id, index), dest)

    async def download_archive(self, job_id: str, dest: str | Path) -> Path:
        return await self._save(*Requests.archive(job_id), dest)

    async def download_all(self, job_id: str, folder: str | Path) -> list[Path]:
        """Every finished result of the job into a folder."""
        job = await self.get(job_id)
        Path(folder).mkdir(parents=True, exist_ok=True)
        return [await self.download(job_id, i.index, folder) for i in job.items if i.result_url]

    async def _save(self, path: str, fallback: str, dest: str | Path) -> Path:
        async with self.http.stream("GET", path) as response:
            if not response.is_success:
                await response.aread()
                _raise_for(response)
            target = _target(dest, _download_name(response, fallback))
            with target.open("wb") as fh:
                async for chunk in response.aiter_bytes():
                    fh.write(chunk)
        return target
