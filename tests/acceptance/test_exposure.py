"""The keyless mode (IMGQ_AUTH=none, the laptop default) on a network: ids are capabilities,
lists show only the caller's own jobs, anonymous writes are rate limited per address; the
Host check against DNS rebinding; the page's security headers; the warning at start."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import httpx

from tests.acceptance.fleet_support import BROKERS, broker_reachable
from tests.conftest import service_missing

from tests.fixtures.encoded import png_bytes
from tests.fixtures.server import Server


def _client_from(server: Server, address: str) -> httpx.Client:
    """A client whose connections come from another loopback address (another machine, as
    far as the server can tell)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, transport=transport, timeout=20.0)


def _submit(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/jobs", files=[("files", ("a.png", png_bytes(30, 20)))],
                       data={"pipeline": "grayscale"})


def test_without_keys_a_job_id_opens_the_job_but_lists_show_only_the_callers_jobs(
        serve: Callable[..., Server]) -> None:
    server = serve("--no-workers")
    with _client_from(server, "127.0.0.1") as here, _client_from(server, "127.0.0.2") as there:
        mine = _submit(here).json()["id"]
        theirs = _submit(there).json()["id"]
        assert [j["id"] for j in here.get("/v1/jobs").json()["jobs"]] == [mine]
        assert [j["id"] for j in there.get("/v1/jobs").json()["jobs"]] == [theirs]
        assert there.get(f"/v1/jobs/{mine}").json()["id"] == mine  # the id is the capability
        assert there.get("/api/jobs").json() == []  # the older APIs' lists follow the rule
        listed = here.get(f"/v1/jobs?ids={mine},{theirs}").json()["jobs"]
        assert [j["id"] for j in listed] == [mine, theirs]


def test_anonymous_writes_are_rate_limited_per_address_with_retry_after(
        serve: Callable[..., Server]) -> None:
    server = serve("--no-workers", anonymous_rate_limit="3/minute",
                   trust_loopback_clients="false")
    with _client_from(server, "127.0.0.3") as busy, _client_from(server, "127.0.0.4") as calm:
        assert [_submit(busy).status_code for _ in range(3)] == [201, 201, 201]
        refused = _submit(busy)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        message = refused.json()["error"]["message"]
        assert "3 per 1 minute" in message and "IMGQ_ANONYMOUS_RATE_LIMIT" in message
        assert busy.get("/v1/jobs").json()["total"] == 3  # nothing stored for the refused one
        assert _submit(calm).status_code == 201  # another address has its own allowance


def test_a_fleet_of_api_servers_counts_one_allowance_per_address_in_redis(
        serve: Callable[..., Server]) -> None:
    """Two API servers sharing IMGQ_RATE_LIMIT_STORAGE_URL: an address that spreads its writes
    over both still gets 3 a minute in all, not 3 on each."""
    problem = broker_reachable(BROKERS["redis"])
    if problem:
        service_missing("redis", problem)
    shared = {"anonymous_rate_limit": "3/minute", "trust_loopback_clients": "false",
              "rate_limit_storage_url": BROKERS["redis"]}
    first, second = serve("--no-workers", **shared), serve("--no-workers", **shared)
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    with _client_from(first, address) as one, _client_from(second, address) as two:
        assert [_submit(one).status_code, _submit(two).status_code,
                _submit(one).status_code] == [201, 201, 201]
        refused = _submit(two)
        assert refused.status_code == 429, refused.text
        assert "3 per 1 minute" in refused.json()["error"]["message"]
        assert two.get("/v1/jobs").json()["total"] == 1  # the refused write stored nothing


def test_an_unreachable_rate_limit_storage_lets_writes_through(
        serve: Callable[..., Server]) -> None:
    """The limiter's storage is down: writes are not refused (nor failed) because of it."""
    server = serve("--no-workers", anonymous_rate_limit="1/minute",
                   trust_loopback_clients="false",
                   rate_limit_storage_url="redis://127.0.0.1:1/0")
    with _client_from(server, "127.0.0.6") as client:
        assert [_submit(client).status_code for _ in range(2)] == [201, 201]
        assert client.get("/v1/jobs").json()["total"] == 2


def test_a_loopback_server_refuses_a_foreign_host_name(
        shared_serve: Callable[..., Server]) -> None:
    server = shared_serve("--no-workers")
    jobs_before = server.jobs_total()
    rebinding = server.client.get("/v1/jobs", headers={"Host": "evil.example"})
    assert rebinding.status_code == 400
    assert "IMGQ_ALLOWED_HOSTS" in rebinding.json()["error"]["message"]
    foreign_submit = server.client.post(
        "/v1/jobs", headers={"Host": f"evil.example:{server.port}"},
        files=[("files", ("a.png", png_bytes()))], data={"pipeline": "grayscale"})
    assert foreign_submit.status_code == 400
    assert server.jobs_total() == jobs_before
    for name in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]"):
        assert server.client.get("/v1/operations", headers={"Host": name}).status_code == 200, name
    assert server.client.get("/healthz", headers={"Host": "10.1.2.3"}).status_code == 200


def test_allowed_hosts_names_the_hosts_a_server_answers_to(serve: Callable[..., Server]) -> None:
    server = serve("--no-workers", allowed_hosts="imgq.example.org,*.imgq.test")
    for name, status in (("imgq.example.org", 200), ("a.imgq.test:443", 200),
                         ("localhost", 400), ("evil.example", 400)):
        answer = server.client.get("/v1/operations", headers={"Host": name})
        assert answer.status_code == status, name


def test_the_page_has_a_strict_policy_and_no_inline_script(
        shared_serve: Callable[..., Server]) -> None:
    server = shared_serve("--no-workers")
    for path in ("/", "/jobs"):
        page = server.client.get(path)
        csp = page.headers["content-security-policy"]
        for rule in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                     "frame-ancestors 'none'", "base-uri 'none'"):
            assert rule in csp, (path, csp)
        assert "unsafe-inline" not in csp and "http" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["x-frame-options"] == "DENY"
        scripts = re.findall(r"<script\b[^>]*>", page.text)
        assert scripts and all('src="/static/' in s for s in scripts), scripts
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", page.text)
        assert re.findall(r"<script\b[^>]*>(.*?)</script>", page.text, re.S) == [""] * len(scripts)
    api = server.client.get("/v1/operations")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in api.headers["content-security-policy"]


def test_serving_without_keys_on_a_network_address_warns_loudly(
        serve: Callable[..., Server], shared_serve: Callable[..., Server]) -> None:
    server = serve("--no-workers", host="0.0.0.0")
    log = server.log_text()
    assert "WARNING" in log and "IMGQ_AUTH=none while listening on 0.0.0.0" in log
    quiet = shared_serve("--no-workers")
    assert "IMGQ_AUTH=none while" not in quiet.log_text()
