"""/processed/<name> with API keys: two clients upload a file of the same name through the
Image Queue Demo and the FastAPI + Celery demo; each reads its own result at the documented
path, never the other's."""

from __future__ import annotations

from collections.abc import Callable

from tests.fixtures.encoded import image_info, jpeg_bytes
from tests.fixtures.keys import auth, create_key
from tests.fixtures.server import Server
from tests.fixtures.waiting import wait_for


def test_each_key_reads_its_own_upload_of_the_same_name(serve: Callable[..., Server]) -> None:
    server = serve(auth="keys", workers=1)
    sizes = {"alice": (60, 40), "bob": (30, 20)}
    keys = {who: auth(create_key(server, who)) for who in sizes}
    for who, (width, height) in sizes.items():
        data = jpeg_bytes(width, height)
        celery = server.client.post("/process-image/", headers=keys[who],
                                    files={"file": ("photo.jpg", data, "image/jpeg")},
                                    data={"operation": "grayscale"}).json()["task_id"]
        status = wait_for(lambda: server.client.get(f"/task-status/{celery}",
                                                    headers=keys[who]).json(),
                          lambda body: body["status"] == "SUCCESS", what="SUCCESS")
        assert status["result"] == "processed/photo.jpg"
        queued = server.client.post("/upload", headers=keys[who],
                                    files={"file": ("holiday.jpg", data, "image/jpeg")})
        task = queued.json()["task_id"]
        wait_for(lambda: server.client.get(f"/status/{task}", headers=keys[who]).json(),
                 lambda body: body["status"] == "done", what="done")
    for who, size in sizes.items():
        for name in ("photo.jpg", "holiday.jpg"):
            found = server.client.get(f"/processed/{name}", headers=keys[who])
            assert found.status_code == 200, (who, name, found.text)
            assert image_info(found.content)[1:3] == size, (who, name)
    assert server.client.get("/processed/photo.jpg").status_code == 401
