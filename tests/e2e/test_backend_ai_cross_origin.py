"""Backend AI's documented browser client ("Frontend Integration Example": submitAITask and
pollTaskStatus), written out here, run from a page on another origin against `imgq serve`
with IMGQ_CORS_ORIGINS naming that origin: it creates a background removal task, polls its
status, reads the result and shows result.result.image_url."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import picture, running_server

PAGE = """<!doctype html><meta charset="utf-8"><title>AI task</title>
<input id="image" type="file" accept="image/*"><button id="go">Cut out</button>
<p id="state"></p><img id="result-image" alt="">
<script>
const API = "__API__";
async function submitAITask(prompt, image, taskType) {
  const formData = new FormData();
  formData.append('prompt', prompt);
  formData.append('task_type', taskType);
  if (image) formData.append('image', image);
  const createResponse = await fetch(`${API}/api/v1/tasks/create/`, {method: 'POST', body: formData});
  const { task_id } = await createResponse.json();
  return pollTaskStatus(task_id);
}
async function pollTaskStatus(taskId) {
  for (let attempt = 0; attempt < 600; attempt++) {
    const response = await fetch(`${API}/api/v1/tasks/${taskId}/status/`);
    const data = await response.json();
    state.textContent = `Status: ${data.status}, Progress: ${data.progress}%`;
    if (data.status === 'SUCCESS') {
      const resultResponse = await fetch(`${API}/api/v1/tasks/${taskId}/result/`);
      return await resultResponse.json();
    }
    if (data.status === 'FAILURE') throw new Error(data.error_message);
    await new Promise(resolve => setTimeout(resolve, 200));  // its example waits 5 s
  }
  throw new Error('Task timeout');
}
go.addEventListener('click', async () => {
  try {
    const result = await submitAITask('cut it out', image.files[0], 'background_removal');
    document.getElementById('result-image').src = result.result.image_url;
    document.body.dataset.done = '1';
  } catch (error) {
    state.textContent = 'Error: ' + error.message;
  }
});
</script>"""


def test_its_documented_client_runs_a_task_from_another_origin(
        page: Any, pages: str, tmp_path: Path) -> None:
    with running_server(tmp_path / "data", IMGQ_CORS_ORIGINS=pages) as server:
        if "remove_background" not in server.operations():
            pytest.skip("the 'remove_background' operation is not installed on this server")
        (tmp_path / "site" / "task.html").write_text(PAGE.replace("__API__", server.url))
        page.goto(f"{pages}/task.html")
        photo = bytes(picture(80, 60, seed=5).pngsave_buffer())
        page.set_input_files("#image", files=[
            {"name": "photo.png", "mimeType": "image/png", "buffer": photo}])
        page.click("#go")
        page.wait_for_selector("body[data-done='1']", timeout=120_000)
        assert page.locator("#state").inner_text() == "Status: SUCCESS, Progress: 100%"
        size = page.locator("#result-image").evaluate(
            "img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
        assert size == [80, 60]
