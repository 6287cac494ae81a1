"""The AI Upscaler's front end runs on its own origin (Next.js on :3000) and calls the API on
another with fetch(). Its e2e spec "submit with file redirects to jobs with ids in URL", in
spirit: a small page written here, served from another port, makes the same calls as its
src/lib/api.ts (upload, poll, queue stats, thumbnail, download, batch ZIP) against `imgq serve`
with IMGQ_CORS_ORIGINS naming that page's origin; from an origin not named, the page can read
nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import Server, running_server

#: The 1×1 PNG its upload.spec.ts sets on the file input.
SPEC_PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEh"
                            "QGAhKmMIQAAAABJRU5ErkJggg==")

UPLOAD_PAGE = """<!doctype html><meta charset="utf-8"><title>Upload images</title>
<h1>Upload images</h1>
<p id="banner" role="alert" hidden></p>
<form id="form"><input id="files" type="file" multiple accept="image/*">
<button type="submit">Upload and process</button></form>
<p id="error"></p>
<script>
const API = "__API__";
fetch(`${API}/api/health`).then(r => { if (!r.ok) throw new Error(); })
  .catch(() => { banner.hidden = false; banner.textContent = "Cannot reach the API."; });
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = new FormData();  // as uploadJobsWithProgress builds it (the Photo preset)
  body.append("scale", "4");
  body.append("method", "real_esrgan");
  body.append("denoise_first", "false");
  body.append("face_enhance", "true");
  for (const file of files.files) body.append("files", file);
  try {
    const res = await fetch(`${API}/api/jobs/upload`, {method: "POST", body});
    if (!res.ok) throw new Error(await res.text());
    const {job_ids} = await res.json();
    location.href = `jobs.html?ids=${job_ids.join(",")}&justUploaded=1`;
  } catch (err) {
    error.textContent = err.message;
  }
});
</script>"""

JOBS_PAGE = """<!doctype html><meta charset="utf-8"><title>Job status</title>
<h1>Job status</h1><p id="queue"></p><ul id="jobs"></ul><p id="batch"></p>
<script>
const API = "__API__";
const ids = new URLSearchParams(location.search).get("ids").split(",").filter(Boolean);
const terminal = ["completed", "failed", "cancelled"];
fetch(`${API}/api/jobs/queue-stats`).then(r => r.json())
  .then(s => { queue.textContent = `${s.queued} in queue, ${s.processing} processing.`; });

function card(job) {
  let li = document.getElementById(job.id);
  if (!li) {
    li = document.createElement("li");
    li.id = job.id;
    li.innerHTML = '<img class="thumb" alt=""> <b></b> <span class="status"></span>';
    li.querySelector(".thumb").src = job.thumbnail_url;
    jobs.append(li);
  }
  li.querySelector("b").textContent = job.original_filename;
  li.querySelector(".status").textContent = job.status;
  li.dataset.status = job.status;
  return li;
}

async function download(job) {  // the Download link, read by the page
  const res = await fetch(job.result_url);
  const image = new Image();
  image.src = URL.createObjectURL(await res.blob());
  await image.decode();
  const li = card(job);
  li.dataset.size = `${image.naturalWidth}x${image.naturalHeight}`;
  li.dataset.disposition = res.headers.get("content-disposition");
}

async function poll() {
  let list;
  try {  // usePollJobs shows a fetch error and keeps polling
    const res = await fetch(`${API}/api/jobs?ids=${encodeURIComponent(ids.join(","))}`);
    list = await res.json();
  } catch (err) {
    setTimeout(poll, 1000);
    return;
  }
  list.forEach(card);
  if (!list.every(j => terminal.includes(j.status))) { setTimeout(poll, 300); return; }
  const completed = list.filter(j => j.status === "completed");
  await Promise.all(completed.map(download));
  const zip = await fetch(`${API}/api/jobs/batch-download?ids=${encodeURIComponent(
    completed.map(j => j.id).join(","))}`);
  const bytes = new Uint8Array(await zip.arrayBuffer());
  batch.textContent = String.fromCharCode(bytes[0], bytes[1]) + " " + bytes.length;
  document.body.dataset.done = "1";
}
poll();
</script>"""


def _write_site(site: Path, api: str) -> None:
    (site / "upload.html").write_text(UPLOAD_PAGE.replace("__API__", api))
    (site / "jobs.html").write_text(JOBS_PAGE.replace("__API__", api))


@pytest.fixture
def api(pages: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path / "data", IMGQ_CORS_ORIGINS=pages) as server:
        _write_site(tmp_path / "site", server.url)
        yield server


def _choose_files(page: Any, files: list[tuple[str, bytes]]) -> None:
    page.set_input_files("#files", files=[
        {"name": name, "mimeType": "image/png", "buffer": data} for name, data in files])


def test_a_page_on_an_allowed_origin_uploads_follows_and_downloads(
        page: Any, pages: str, api: Server) -> None:
    if "upscale" not in api.operations():
        pytest.skip("the 'upscale' operation is not installed on this server")
    page.goto(f"{pages}/upload.html")
    _choose_files(page, [("test.png", SPEC_PNG), ("test2.png", SPEC_PNG)])
    page.get_by_role("button", name="Upload and process").click()
    page.wait_for_url("**/jobs.html?ids=*")  # "redirects to jobs with ids in URL"
    ids = page.url.split("ids=", 1)[1].split("&", 1)[0].split(",")
    assert len(ids) == 2
    page.wait_for_function("document.querySelector('#queue').textContent.endsWith('processing.')")
    page.wait_for_selector("body[data-done='1']", timeout=180_000)
    for job_id, name in zip(ids, ("test", "test2")):
        li = page.locator(f"li[id='{job_id}']")
        assert li.get_attribute("data-status") == "completed"
        assert li.get_attribute("data-size") == "4x4"  # 1×1 upscaled ×4
        assert f'filename="{name}_upscaled.png"' in (li.get_attribute("data-disposition") or "")
        assert li.locator("img.thumb").evaluate("img => img.naturalWidth") == 1
    magic, size = page.locator("#batch").inner_text().split()
    assert magic == "PK" and int(size) > 100
    assert page.locator("#banner").is_hidden()


def test_a_page_on_another_origin_reads_nothing(page: Any, pages: str, tmp_path: Path) -> None:
    # No workers: the browser sends a form post without asking first (a "simple" request), so
    # the job is made; only its answer is kept from the page. CORS protects what pages read.
    with running_server(tmp_path / "data", "--no-workers",
                        IMGQ_CORS_ORIGINS="http://localhost:3000") as server:
        _write_site(tmp_path / "site", server.url)
        page.goto(f"{pages}/upload.html")
        page.locator("#banner").wait_for()
        assert page.locator("#banner").inner_text() == "Cannot reach the API."
        _choose_files(page, [("test.png", SPEC_PNG)])
        page.get_by_role("button", name="Upload and process").click()
        page.wait_for_function("document.querySelector('#error').textContent !== ''")
        assert "Failed to fetch" in page.locator("#error").inner_text()
        assert page.url.endswith("/upload.html")
        assert server.jobs_total() == 1
