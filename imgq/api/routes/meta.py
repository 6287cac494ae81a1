"""Operations, health and readiness."""

from __future__ import annotations

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from imgq.api.capacity import low_space
from imgq.api.deps import RuntimeDep
from imgq.api.schemas import OperationOut

router = APIRouter()


@router.get("/v1/operations", response_model=list[OperationOut], tags=["operations"],
            summary="Every operation, its parameters (JSON schema) and resource class")
async def list_operations(rt: RuntimeDep) -> list[OperationOut]:
    # In a thread: describing `upscale` may scan and load a new file in the models folder.
    described = await anyio.to_thread.run_sync(lambda: [op.describe() for op in rt.registry])
    return [OperationOut(**d) for d in described]


@router.get("/healthz", tags=["health"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"],
            summary="The database and storage are reachable and the disk has room",
            responses={503: {"description": "A dependency is down; the body says which."}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    for name, ping in (("database", rt.repo.ping), ("storage", rt.blobs.ping)):
        try:
            await anyio.to_thread.run_sync(ping)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    full = await anyio.to_thread.run_sync(low_space, rt)
    checks["disk"] = f"full: {full}" if full else "ok"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                        status_code=200 if ok else 503)
