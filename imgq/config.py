"""Settings: every one has a default, a description and a group, read from IMGQ_* variables."""

from __future__ import annotations

import json
import logging
import os
import re
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse_many
from limits.errors import ConfigurationError
from limits.storage import Storage, storage_from_string
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "IMGQ_"
SETTINGS_FILE_VARIABLE = "IMGQ_SETTINGS_FILE"
DEFAULT_SETTINGS_FILE = ".secrets.toml"

# Settings whose name changed: the old name is still read, with a warning, for one release.
RENAMED = {
    "item_time_limit": "item_time_limit_seconds",
    "retry_backoff": "retry_backoff_seconds",
    "stuck_after": "stuck_after_seconds",
    "sweep_interval": "sweep_interval_seconds",
    "queue_sweep_interval": "queue_sweep_interval_seconds",
    "outbox_grace": "outbox_grace_seconds",
    "nats_ack_wait": "nats_ack_wait_seconds",
    "s3_multipart_threshold": "s3_multipart_threshold_bytes",
    "s3_presign_expiry": "s3_presign_expiry_seconds",
    "events_poll_interval": "events_poll_interval_seconds",
    "events_heartbeat": "events_heartbeat_seconds",
    "webhook_timeout": "webhook_timeout_seconds",
    "webhook_retry_backoff": "webhook_retry_backoff_seconds",
    "ai_tile": "ai_tile_pixels",
    "device": "ai_device",
    "models_dir": "ai_models_dir",
    "compat_seed000": "compat_ai_upscaler",
    "compat_seed001": "compat_image_api",
    "compat_seed002": "compat_queue_demo",
    "compat_seed003": "compat_backend_ai",
    "compat_seed004": "compat_celery_demo",
    "compat_seed002_pipeline": "compat_queue_demo_pipeline",
    "compat_seed000_standard_model": "compat_ai_upscaler_standard_model",
    "compat_seed000_detailed_model": "compat_ai_upscaler_detailed_model",
}

log = logging.getLogger(__name__)


def settings_file() -> Path:
    """The TOML file settings are also read from (keys are the setting names, lower case,
    without IMGQ_); like the Image Queue Demo's, `.secrets.toml` in the working directory."""
    return Path(os.environ.get(SETTINGS_FILE_VARIABLE) or DEFAULT_SETTINGS_FILE)


def _setting(default: Any, description: str, group: str, **kw: Any) -> Any:
    return Field(default, description=description, json_schema_extra={"group": group}, **kw)


class AnimatedPolicy(str, Enum):
    first_frame = "first_frame"
    reject = "reject"


class AuthMode(str, Enum):
    none = "none"
    keys = "keys"


#: The operations a remote endpoint can serve (docs/ai.md, "Remote endpoints").
REMOTE_OPERATIONS = ("upscale", "remove_background", "style_transfer", "generate", "face_swap")
#: Operations whose `model` parameter picks the endpoint; any other is served by its one
#: endpoint as a whole.
MODEL_CHOSEN_OPERATIONS = ("upscale", "generate")
REPLICATE_URL = "https://api.replicate.com/v1"


class RemoteEndpoint(BaseModel):
    """Where one model runs when it runs elsewhere: another imgq (its /v1/jobs API) or
    Replicate's predictions API. No secret here: `token` names an entry of
    IMGQ_AI_REMOTE_TOKENS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation: Literal["upscale", "remove_background", "style_transfer", "generate",
                       "face_swap"]
    kind: Literal["imgq", "replicate"]
    url: str = ""
    token: str = ""
    model: str = ""
    version: str = ""
    scale: int = Field(4, ge=1, le=8)
    params: dict[str, Any] = {}
    input: dict[str, Any] = {}

    @model_validator(mode="after")
    def _complete(self) -> RemoteEndpoint:
        if self.kind == "replicate" and not self.url:
            object.__setattr__(self, "url", REPLICATE_URL)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http(s) URL of the {self.kind} endpoint, not "
                             f"{redact(self.url)!r}")
        if parts.username or parts.password:
            raise ValueError("url must not carry a user or password; name a token instead")
        if self.kind == "replicate" and not (self.version or "/" in self.model):
            raise ValueError("a replicate endpoint needs version (a version id) or model "
                             "(owner/name)")
        if self.kind == "replicate" and not self.token:
            raise ValueError("a replicate endpoint needs token (the name of its entry in "
                             "IMGQ_AI_REMOTE_TOKENS)")
        if self.kind == "imgq" and (self.version or self.input):
            raise ValueError("version and input are for replicate endpoints; an imgq endpoint "
                             "takes model and params")
        if self.kind == "replicate" and self.params:
            raise ValueError("params is for imgq endpoints; a replicate endpoint takes input")
        return self

    def where(self) -> str:
        """The endpoint as users may see it: its kind, host and model, never a secret."""
        parts = urlsplit(self.url)
        model = self.version[:12] if self.kind == "replicate" and not self.model else self.model
        return f"{self.kind} at {parts.scheme}://{parts.netloc}" + (f" ({model})" if model
                                                                     else "")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the settings file: the environment wins."""
        toml = TomlConfigSettingsSource(settings_cls, toml_file=settings_file())
        return init_settings, env_settings, toml

    # server
    host: str = _setting("127.0.0.1", "Address the HTTP server listens on.", "server")
    port: int = _setting(8000, "Port the HTTP server listens on.", "server", ge=1, le=65535)
    public_url: str = _setting(
        "", "Base URL used in links given to clients; empty means the request's own.", "server"
    )
    log_level: str = _setting("INFO", "Logging level: DEBUG, INFO, WARNING or ERROR.", "server",
                              pattern=r"(?i)^(debug|info|warning|error|critical)$")
    log_format: str = _setting(
        "text", "Log lines as text for people, or json (one object per line) for a log "
        "collector.", "server", pattern="^(text|json)$")
    status_cache_seconds: float = _setting(
        0.1, "How long an API server may answer GET /v1/jobs/{id} from its memory: pollers "
        "see workers' progress at most this late (never a change made through this server). "
        "0 reads the database every time.", "server", ge=0, le=10)
    cors_origins: Annotated[list[str], NoDecode] = _setting(
        [], "Origins whose web pages may call the API (CORS), comma-separated, e.g. "
        "http://localhost:3000; * allows every origin; empty sends no CORS headers.", "server")

    # access: keys, quotas, hosts (README, "Running it on a network")
    auth: AuthMode = _setting(
        AuthMode.none, "none: no keys, a job's id is its capability and lists show the jobs "
        "of the caller's address; keys: every route but /healthz, /readyz and the page needs "
        "an API key (imgq keys create).", "access")
    allowed_hosts: Annotated[list[str], NoDecode] = _setting(
        [], "Host names clients may use (the Host header), comma-separated; *.example.com "
        "allows subdomains, * any. Empty: only loopback names when bound to a loopback "
        "address (against DNS rebinding), any name otherwise.", "access")
    quota_active_items: int = _setting(
        1000, "Items one key may have queued or running at once (imgq keys create "
        "--max-active-items overrides it per key); 0: no limit.", "access", ge=0)
    quota_items_per_day: int = _setting(
        20000, "Items one key may submit per UTC day; 0: no limit.", "access", ge=0)
    quota_stored_bytes: int = _setting(
        10 * 1024**3, "Bytes of inputs and results one key may keep stored; 0: no limit.",
        "access", ge=0)
    anonymous_rate_limit: str = _setting(
        "120/minute", "Writes (submit, cancel, delete) per client address without keys "
        "(IMGQ_AUTH=none), counted where IMGQ_RATE_LIMIT_STORAGE_URL says, in the "
        "`limits` notation, e.g. 60/minute or 10/second;1000/day; empty: no limit.", "access")
    rate_limit_storage_url: str = _setting(
        "", "Where the anonymous rate limit is counted, as a `limits` storage URL: empty counts "
        "in each API server's memory; `redis://host:6379/0` counts once for a fleet of API "
        "servers. If that storage cannot be reached, writes are let through and a warning is "
        "logged.", "access")
    trust_loopback_clients: bool = _setting(
        True, "Clients on this machine (loopback) are not rate limited in the keyless mode.",
        "access")

    # storage
    data_dir: Path = _setting(Path("imgq-data"), "Folder for the SQLite database and files.", "storage")
    database_url: str = _setting(
        "", "SQLAlchemy URL of the job store; empty means SQLite in the data folder.", "storage"
    )
    storage_url: str = _setting(
        "", "Where files are kept: file:///path; empty means <data_dir>/blobs.", "storage"
    )

    # workers
    workers: int = _setting(
        0, "Worker processes run by `imgq serve` (in a fleet, the API publishes a job's CPU items "
        "as this many broker messages, one more per 10 items beyond: set it to the fleet's CPU "
        "worker processes; GPU items are a message each); 0 means one per CPU core.", "workers",
        ge=0
    )
    lease_seconds: float = _setting(
        60.0, "How long a claimed item stays ours without a heartbeat.", "workers", gt=0
    )
    item_time_limit_seconds: float = _setting(
        600.0, "Seconds one item may process before it fails as timed out; an item with AI "
        "steps gets twice their estimated time on top.", "workers", gt=0
    )
    max_attempts: int = _setting(
        3, "Attempts per item, counting the first, before an error that may be the image's "
        "(out of memory, a crashed worker process) fails it. The server's own trouble "
        "(database, storage, broker) is retried without spending them.", "workers", ge=1
    )
    max_lost_leases: int = _setting(
        5, "Times an item's worker may stop answering (killed, cut off) before the item fails "
        "as worker_lost; these do not spend its attempts.", "workers", ge=1
    )
    kill_grace_seconds: float = _setting(
        3.0, "Seconds a step may take to stop by itself after a cancel or the time limit "
        "before its worker process is ended (and replaced).", "workers", gt=0
    )
    cancel_poll_seconds: float = _setting(
        1.0, "Seconds between two looks, by each running item, at whether its job was "
        "cancelled.", "workers", gt=0
    )
    worker_nice: int = _setting(
        10, "How much lower the CPU priority of the processes that run items is than the "
        "rest of imgq (Unix nice, 0-19): where the API shares the cores with them, status "
        "reads and uploads are answered at once while images are processed, and the items "
        "still get every cycle nothing else wants; 0 gives them the same priority. Where "
        "Linux shares the cores between sessions first (autogroup), an `imgq worker` that "
        "leads its own session (as a service manager or setsid starts it) lowers its "
        "session's CPU group by as much.",
        "workers", ge=0, le=19)
    worker_max_items: int = _setting(
        0, "Items a worker process runs before it is replaced by a fresh one (as Celery's "
        "worker_max_tasks_per_child); 0 means never.", "workers", ge=0
    )
    idempotency_ttl_seconds: float = _setting(
        86400.0, "How long the answer to a submit with an Idempotency-Key is kept, per key and "
        "client: a retry within it gets the first job again.", "server", gt=0
    )
    worker_max_memory_mb: int = _setting(
        0, "Resident memory (MB) above which a worker process is replaced after its item "
        "(as Celery's worker_max_memory_per_child); 0 means no ceiling.", "workers", ge=0
    )
    retry_backoff_seconds: float = _setting(
        2.0, "Base seconds of the exponential retry backoff (with jitter).", "workers", gt=0
    )
    stuck_after_seconds: float = _setting(
        3600.0, "Seconds after which a queued item that never ran is failed; also how long "
        "the server's own trouble (database, storage) is retried before an item gives up.",
        "workers", gt=0
    )

    # limits
    max_files: int = _setting(10, "Files per job.", "limits", ge=1)
    max_file_bytes: int = _setting(50 * 1024 * 1024, "Bytes per uploaded file.", "limits", ge=1)
    max_pixels: int = _setting(16_000_000, "Pixels per image (width × height).", "limits", ge=1)
    max_frames: int = _setting(100, "Frames in an animated image.", "limits", ge=1)
    animated: AnimatedPolicy = _setting(
        AnimatedPolicy.first_frame,
        "Animated GIF/WebP inputs: first_frame processes the first frame, reject refuses them.",
        "limits",
    )
    max_filename_bytes: int = _setting(
        255, "Longest original file name kept, in UTF-8 bytes (longer ones are shortened, "
        "keeping the extension).", "limits", ge=16, le=1024)
    max_output_pixels: int = _setting(
        256_000_000, "Pixels (width × height) any step of a pipeline may make; a pipeline "
        "that would make more is refused when submitted. The default lets a ×4 upscale of "
        "the largest input (IMGQ_MAX_PIXELS) through.", "limits", ge=1)
    max_form_bytes: int = _setting(
        1024 * 1024, "Bytes of all the non-file fields of one upload together (their "
        "headers included).", "limits", ge=1024)
    upload_idle_timeout_seconds: float = _setting(
        15.0, "Seconds a request body may pause before the request is refused (408).",
        "limits", gt=0)
    upload_min_bytes_per_second: int = _setting(
        16 * 1024, "Bytes per second a request body must average once it has had "
        "upload_idle_timeout_seconds (slow uploads hold a connection); 0 means no minimum.",
        "limits", ge=0)

    min_free_bytes: int = _setting(
        256 * 1024 * 1024, "Free disk space below which uploads are refused (503) and /readyz "
        "says not ready, for the staging folder and local storage.", "storage", ge=0)

    preview_memory_bytes: int = _setting(
        160 * 1024 * 1024, "Bytes the API may hold decoding previews at once; formats that "
        "cannot shrink while loading (interlaced PNG, progressive JPEG, GIF, HEIF) reserve "
        "their decoded size, and a preview needing more than this is refused.", "limits",
        ge=16 * 1024 * 1024)
    preview_wait_seconds: float = _setting(
        15.0, "Seconds a preview may wait for IMGQ_PREVIEW_MEMORY_BYTES before it is refused (429).",
        "limits", gt=0)

    # expiry
    ttl_seconds: int = _setting(3600, "Default lifetime of a job's files.", "expiry", ge=1)
    max_ttl_seconds: int = _setting(7 * 24 * 3600, "Longest ttl_seconds a client may ask.", "expiry", ge=1)
    sweep_interval_seconds: float = _setting(300.0, "Seconds between two sweeps.", "expiry", gt=0)

    # fleet: brokers, queues, database pool (see docs/fleet.md)
    broker_url: str = _setting(
        "", "Message broker: empty runs workers inside `imgq serve`; redis:// or amqp:// "
        "uses Celery; nats:// uses NATS JetStream.", "fleet")
    cpu_queue: str = _setting("cpu", "Queue of items whose pipeline has only cpu steps.", "fleet",
                              pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    gpu_queue: str = _setting("gpu", "Queue of items whose pipeline has a gpu step.", "fleet",
                              pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    sweep_queue: str = _setting(
        "imgq-sweep", "Queue of the periodic sweep tasks that `imgq beat` sends and runs.",
        "fleet", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    queue_sweep_interval_seconds: float = _setting(
        5.0, "Seconds between two sweeps for lost leases and unpublished items (imgq beat).",
        "fleet", gt=0)
    outbox_grace_seconds: float = _setting(
        30.0, "Seconds a due, queued item may wait before the sweeper publishes it again, in "
        "case its message was lost (a duplicate is harmless, only wasted work).", "fleet", gt=0)
    nats_ack_wait_seconds: float = _setting(
        30.0, "Seconds NATS waits for an ack before redelivering (workers send progress acks "
        "while an item runs).", "fleet", gt=0)
    db_pool_size: int = _setting(5, "Database connections kept open per process.", "fleet", ge=1)
    db_max_overflow: int = _setting(
        10, "Extra database connections a process may open under load.", "fleet", ge=0)

    # S3 storage (IMGQ_STORAGE_URL=s3://bucket/prefix)
    s3_endpoint_url: str = _setting(
        "", "S3 endpoint, e.g. http://minio:9000; empty means AWS.", "s3")
    s3_region: str = _setting("", "S3 region; empty means the SDK's default.", "s3")
    s3_access_key_id: str = _setting(
        "", "S3 access key; empty uses the SDK's usual sources (env, profile, role).", "s3")
    s3_secret_access_key: SecretStr = _setting(SecretStr(""), "S3 secret key.", "s3")
    s3_addressing_style: str = _setting(
        "auto", "S3 addressing: auto, path (MinIO, SeaweedFS) or virtual.", "s3",
        pattern="^(auto|path|virtual)$")
    s3_multipart_threshold_bytes: int = _setting(
        16 * 1024 * 1024, "Files of this many bytes or more are uploaded in parts.", "s3",
        ge=5 * 1024 * 1024)
    s3_presigned_downloads: bool = _setting(
        False, "Answer result downloads with a redirect to a presigned S3 URL.", "s3")
    s3_presign_expiry_seconds: int = _setting(
        300, "Seconds a presigned download URL stays valid.", "s3", ge=1, le=7 * 24 * 3600)

    # live events and webhooks
    events_poll_interval_seconds: float = _setting(
        0.5, "Seconds between two looks at the database by a live event stream (SSE).",
        "events", gt=0, le=10)
    events_max_streams_per_job: int = _setting(
        1000, "Live event streams (SSE) open at once on one job; more are refused (429). "
        "They share one database poll per job.", "events", ge=1)
    events_heartbeat_seconds: float = _setting(
        15.0, "Seconds between two keep-alive comments on an idle event stream.", "events", gt=0)
    webhook_secret: SecretStr = _setting(
        SecretStr(""), "Key that signs webhook deliveries (HMAC-SHA256); callback_url is "
        "refused while it is empty.", "events")
    webhook_allow_private: bool = _setting(
        False, "Allow webhooks to loopback, private and link-local addresses.", "events")
    webhook_timeout_seconds: float = _setting(10.0, "Seconds one webhook delivery may take.", "events",
                                      gt=0)
    webhook_max_attempts: int = _setting(
        8, "Deliveries tried per webhook before it is given up.", "events", ge=1)
    webhook_retry_backoff_seconds: float = _setting(
        10.0, "Base seconds of the webhook retry backoff (doubling, at most an hour).", "events",
        gt=0)

    # compatibility APIs of the five earlier systems (see docs/compat.md)
    compat_ai_upscaler: bool = _setting(
        True, "Serve the AI Upscaler API (/api/jobs/...).", "compat")
    compat_image_api: bool = _setting(
        True, "Serve the image-api API (/process-job, /status-job, /download, /images).", "compat")
    compat_queue_demo: bool = _setting(
        True, "Serve the Image Queue Demo API (/upload, /status, /health, /result).", "compat")
    compat_backend_ai: bool = _setting(
        True, "Serve the Backend AI API (/api/v1/tasks/...).", "compat")
    compat_celery_demo: bool = _setting(
        True, "Serve the FastAPI + Celery demo API (/process-image/, /task-status, /task-result).", "compat")
    compat_queue_demo_pipeline: str = _setting(
        "encode", "Pipeline the Image Queue Demo's POST /upload applies; the default keeps the "
        "picture as it is, upright, without metadata (EXIF, GPS), in its own format.", "compat",
        min_length=1)
    compat_ai_upscaler_standard_model: str = _setting(
        "realesrgan-x4plus", "Model of the AI Upscaler's method real_esrgan (standard).", "compat")
    compat_ai_upscaler_detailed_model: str = _setting(
        "dat-light-x{scale}", "Model of the AI Upscaler's method swinir (detailed); {scale} is "
        "replaced by 2 or 4. A SwinIR file in IMGQ_AI_MODELS_DIR can be named here.", "compat")
    compat_ai_upscaler_anime_model: str = _setting(
        "realesrgan-x4plus-anime", "Model of the AI Upscaler's method real_esrgan_anime.",
        "compat")
    compat_ai_upscaler_esrgan_model: str = _setting(
        "realesrgan-x4plus", "Model of the AI Upscaler's method esrgan (the original ESRGAN). "
        "No package ships the original ESRGAN weights; the default is the same RRDB network "
        "trained by Real-ESRGAN. Put ESRGAN_x4.pth in IMGQ_AI_MODELS_DIR and set ESRGAN_x4 here "
        "to use them.", "compat")

    # AI operations: upscale, remove_background, plug-ins (see docs/ai.md)
    ai_models_dir: Path | None = _setting(
        None, "Folder of your own .safetensors/.pth models; unset means <data_dir>/models.", "ai")
    ai_device: str = _setting(
        "auto", "Where AI models run: auto (CUDA when present, else CPU), cpu, cuda or cuda:N.",
        "ai", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    ai_max_pixels: int = _setting(
        0, "An operator's cap on input pixels per image for AI upscaling when models run on "
        "the CPU; 0 means none beyond IMGQ_MAX_PIXELS (the answer to a submission gives each "
        "image's estimated time instead). A refusal names this setting, the size and the "
        "estimate.", "ai", ge=0)
    ai_max_pixels_gpu: int = _setting(
        4_000_000, "Input pixels per image for AI upscaling when models run on CUDA.", "ai", ge=1)
    ai_precision: str = _setting(
        "auto", "Model precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.", "ai",
        pattern="^(auto|fp32|fp16|bf16)$")
    ai_compile: bool = _setting(
        False, "Compile models with torch.compile (slow first run, faster afterwards).", "ai")
    ai_workers: int = _setting(
        1, "Worker processes of `imgq serve` that run AI (gpu) steps, apart from those that "
        "run classic steps, so that neither waits for the other. Each uses the cores ÷ this "
        "many CPU threads.", "ai", ge=1)
    ai_items_in_flight: int = _setting(
        0, "Items one AI worker process runs at the same time, in threads sharing its loaded "
        "models: their tiles of one shape go through a model in shared batches, and one item's "
        "decoding, encoding and storage overlap another's model work. 0 means auto: 4 when "
        "models run on CUDA, 1 on the CPU (where one item already fills the cores).", "ai",
        ge=0, le=64)
    ai_measure_on_start: bool = _setting(
        True, "Measure the installed upscaling models on this machine's CPU once (about a "
        "second of work each, remembered in IMGQ_AI_COSTS_FILE), so that the first estimates "
        "are this machine's: the default model when the AI workers of `imgq serve` start, the "
        "others one at a time while those workers are idle (models that run on torch by their "
        "first run).", "ai")
    ai_costs_file: Path | None = _setting(
        None, "File of this machine's measured model costs, behind the time estimates; "
        "unset means $XDG_CACHE_HOME/imgq/model-costs.json (~/.cache/...).", "ai")
    ai_tile_pixels: int = _setting(
        0, "Tile side in pixels for AI upscaling; 0 chooses it from free memory.", "ai", ge=0)
    ai_prompt_rules: str = _setting(
        "", "JSON file of the prompt refinement rules of generate (quality terms, style terms "
        "by keyword, default negative prompt); empty means the built-in rules (docs/ai.md).",
        "ai")

    ai_remote_endpoints: Annotated[dict[str, RemoteEndpoint], NoDecode] = _setting(
        {}, "Models served by a remote endpoint instead of a local model: a JSON object (or a "
        "TOML table in the settings file) from model name to {operation, kind: imgq|replicate, "
        "url, token, model, version, scale, params, input}. Only these endpoints are ever sent "
        "an image (docs/ai.md, Remote endpoints).", "ai")
    ai_remote_tokens: SecretStr = _setting(
        SecretStr(""), "API keys and tokens of the remote endpoints, a JSON object (or TOML "
        "table) from token name to its value; an endpoint names its entry with `token`.", "ai")
    ai_remote_timeout_seconds: float = _setting(
        30.0, "Seconds one request to a remote endpoint may take (connect, send, answer); the "
        "whole remote run is bound by the item's time limit.", "ai", gt=0, le=600)
    ai_remote_poll_seconds: float = _setting(
        1.0, "Seconds between two looks at a remote job or prediction (progress, end).", "ai",
        gt=0, le=60)
    ai_remote_max_result_bytes: int = _setting(
        256 * 1024 * 1024, "Largest result a remote endpoint may send back, in bytes.", "ai",
        ge=1024)
    ai_remote_inline_bytes: int = _setting(
        256 * 1024, "Images up to this many bytes go to Replicate inline as data URIs; larger "
        "ones are uploaded through its files API first.", "ai", ge=0)

    @field_validator("ai_remote_endpoints", mode="before")
    @classmethod
    def _parse_endpoints(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object of model name to endpoint ({exc.msg} at "
                                 f"character {exc.pos})") from None
        return value

    @field_validator("ai_remote_tokens", mode="before")
    @classmethod
    def _tokens_as_text(cls, value: Any) -> Any:
        return json.dumps(value) if isinstance(value, dict) else value

    def remote_tokens(self) -> dict[str, str]:
        """IMGQ_AI_REMOTE_TOKENS as name → token (validated when the settings were read)."""
        return _token_table(self.ai_remote_tokens.get_secret_value())

    @model_validator(mode="after")
    def _check_remote(self) -> "Settings":
        try:
            tokens = self.remote_tokens()
        except ValueError as exc:
            raise ValueError(f"IMGQ_AI_REMOTE_TOKENS: {exc}") from None
        served: dict[str, str] = {}
        for name, endpoint in self.ai_remote_endpoints.items():
            if not name.strip() or len(name) > 200:
                raise ValueError("IMGQ_AI_REMOTE_ENDPOINTS: a model name must be 1 to 200 "
                                 "characters")
            if endpoint.token and endpoint.token not in tokens:
                known = ", ".join(sorted(tokens)) or "none"
                raise ValueError(
                    f"IMGQ_AI_REMOTE_ENDPOINTS: {name} names token {endpoint.token!r}, which "
                    f"IMGQ_AI_REMOTE_TOKENS does not have (its names: {known})")
            other = served.setdefault(endpoint.operation, name)
            if other != name and endpoint.operation not in MODEL_CHOSEN_OPERATIONS:
                raise ValueError(
                    f"IMGQ_AI_REMOTE_ENDPOINTS: {other} and {name} both serve "
                    f"{endpoint.operation}, which has no model parameter to choose between "
                    "them; keep one")
        return self

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _check_rate_storage(cls, value: str) -> str:
        if value.strip():
            try:
                usable = isinstance(storage_from_string(value.strip()), Storage)
            except (ConfigurationError, ValueError) as exc:
                raise ValueError(f"{redact(value)!r}: {exc}") from None
            if not usable:
                raise ValueError(f"{redact(value)!r}: use the synchronous form (no async+)")
        return value.strip()

    @field_validator("anonymous_rate_limit")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a rate like 60/minute") from None
        return value.strip()

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _fill_paths(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'imgq.db').resolve()}"
        if not self.storage_url:
            self.storage_url = (self.data_dir / "blobs").resolve().as_uri()
        if self.ai_models_dir is None:
            self.ai_models_dir = self.data_dir / "models"
        if self.ttl_seconds > self.max_ttl_seconds:
            raise ValueError("ttl_seconds must not exceed max_ttl_seconds")
        return self

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def ai_threads(self) -> int:
        """CPU threads of one AI worker process: the cores shared among the AI workers."""
        return max(1, (os.cpu_count() or 1) // self.ai_workers)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def describe_settings() -> str:
    """Text listing every setting, its variable and default, grouped (for --help)."""
    groups: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        group = str(extra.get("group", "other"))
        default = field.default.value if isinstance(field.default, Enum) else field.default
        groups.setdefault(group, []).append(
            f"{env_name(name)} (default {default!s:.40}): {field.description}"
        )
    lines = []
    for group, rows in groups.items():
        lines.append(f"[{group}]")
        lines.extend(f"  {row}" for row in rows)
    return "\n".join(lines)


class SettingsError(Exception):
    pass


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the arguments, the environment and the settings file; a bad value
    raises SettingsError naming the variable."""
    overrides = {**_renamed_from_environment(), **_renamed(overrides)}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            head, *rest = [str(p) for p in err["loc"]] or [""]
            message = str(err["msg"]).removeprefix("Value error, ")
            if not head:  # a check across settings: its message names them
                problems.append(message)
                continue
            problems.append(f"{'.'.join([env_name(head), *rest])}: {message}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def _renamed(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        if name in RENAMED:
            log.warning("setting %s is now called %s; the old name will stop working in the "
                        "next release", name, RENAMED[name])
            name = RENAMED[name]
        out[name] = value
    return out


def _renamed_from_environment() -> dict[str, Any]:
    """Values still given under an old variable name, unless the new one is set too."""
    found = {}
    for old, new in RENAMED.items():
        if env_name(old) in os.environ and env_name(new) not in os.environ:
            log.warning("%s is now called %s; the old name will stop working in the next "
                        "release", env_name(old), env_name(new))
            found[new] = os.environ[env_name(old)]
    return found


def as_environment(settings: Settings) -> list[str]:
    """`IMGQ_NAME=value` lines that read back as the same settings; secrets, and URLs with a
    password, come out as comments, never in clear."""
    lines = []
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            state = "set" if value.get_secret_value() else "empty"
            lines.append(f"# {env_name(name)}=<{state}, hidden>")
            continue
        text = _as_text(value)
        if redact(text) != text:
            lines.append(f"# {env_name(name)}={redact(text)}  (password hidden)")
        else:
            lines.append(f"{env_name(name)}={text}")
    return lines


def _token_table(text: str) -> dict[str, str]:
    if not text.strip():
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not a JSON object of token name to token") from None
    if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in table.items()):
        raise ValueError("must map each token name to a non-empty string")
    return table


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps({k: v.model_dump(exclude_defaults=True) if isinstance(v, BaseModel)
                           else v for k, v in value.items()}, separators=(",", ":"))
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)", re.I)


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***: for logs and printed
    settings. The one place imgq hides secrets in URLs. A text without "://" has no URL: the
    expression, tried at every position of a log line, cost more than the rest of its
    formatting."""
    return _URL_PASSWORD.sub(r"\g<head>***", text) if "://" in text else text


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
