"""A large upload's body arrives in chunks and is parsed batch by batch: each staged file holds
exactly its part's bytes however the chunks fall, and a file's bytes in one batch reach its
staging file in one write, not one per chunk."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from imgq.api.uploads import _Collector, Upload, UploadLimits

BOUNDARY = b"----imgq-test-boundary-7f3a"
LIMITS = UploadLimits(max_files=10, max_file_bytes=8 << 20)
CHUNK = 64 * 1024


def _body(files: list[bytes]) -> bytes:
    parts = [b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="pipeline"\r\n\r\n'
             b"blur\r\n"]
    for n, data in enumerate(files):
        parts.append(b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="files"; '
                     b'filename="photo-' + str(n).encode() + b'.jpg"\r\n'
                     b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n")
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def _staged(tmp_path: Path, batches: list[list[bytes]]) -> Upload:
    upload = Upload()
    collector = _Collector(upload, tmp_path, LIMITS)
    collector.start(BOUNDARY)
    for batch in batches[:-1]:
        collector.feed(batch)
    collector.feed(batches[-1], last=True)
    return upload


def _write_calls() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("syscw:"))


def test_staged_files_hold_their_parts_however_the_chunks_fall(tmp_path: Path) -> None:
    rng = random.Random(15)
    files = [rng.randbytes(rng.randrange(1, 400_000)) for _ in range(5)]
    body = _body(files)
    for trial in range(20):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randrange(1, 60)))
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
        batches: list[list[bytes]] = [[]]
        for chunk in chunks:  # batches of a random number of chunks, as a slow body gives
            if batches[-1] and rng.random() < 0.3:
                batches.append([])
            batches[-1].append(chunk)
        folder = tmp_path / str(trial)
        folder.mkdir()
        upload = _staged(folder, batches)
        assert upload.fields == {"pipeline": "blur"}
        assert [f.path.read_bytes() for f in upload.files] == files
        assert [f.size for f in upload.files] == [len(f) for f in files]


#: Run in a process of its own: /proc/self/io counts the writes of every thread of the process,
#: and a test run's other threads (a heartbeat, a sweeper, a log handler) may write meanwhile.
COUNT_WRITES = """
import random, sys
from pathlib import Path
sys.path[:0] = [sys.argv[2]]
from test_upload_batches import CHUNK, _body, _staged, _write_calls
photo = random.Random(2).randbytes(900_000)  # 14 chunks of 64 KiB
body = _body([photo])
chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]
before = _write_calls()
upload = _staged(Path(sys.argv[1]), [chunks])
writes = _write_calls() - before
assert upload.files[0].path.read_bytes() == photo
print(writes, len(chunks))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts writes in /proc (Linux)")
def test_a_file_in_one_batch_is_written_once_not_once_per_chunk(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", COUNT_WRITES, str(tmp_path),
                           str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=60, check=True)
    writes, chunks = map(int, done.stdout.split())
    assert writes <= 2, f"{writes} writes for one file that came in {chunks} chunks"
