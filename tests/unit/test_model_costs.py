"""The model cost book: fits from timed runs, shared through its file, and the estimates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgq.ai.costs import (
    MEASURED,
    PACE_FRESH_SECONDS,
    REFERENCE,
    CostBook,
    Run,
    Fit,
    cost_class,
    cost_key,
    covered_pixels,
    estimate,
    load_pace,
)
from imgq.ai.descriptors import SHIPPED
from imgq.ai.estimate import reference_cpu_seconds_per_pixel

X4PLUS = SHIPPED.get("realesrgan-x4plus")


def test_a_fit_through_runs_of_two_sizes_finds_the_fixed_and_the_per_pixel_cost() -> None:
    fit = Fit()
    for pixels in (10_000, 40_000, 90_000, 10_000):
        fit.add(pixels, 0.5 + 2e-4 * pixels)
    overhead, per_pixel = fit.line()  # type: ignore[misc]
    assert overhead == pytest.approx(0.5, rel=1e-6)
    assert per_pixel == pytest.approx(2e-4, rel=1e-6)


def test_one_run_gives_a_per_pixel_cost_alone() -> None:
    fit = Fit()
    fit.add(10_000, 3.0)
    assert fit.line() == (0.0, pytest.approx(3e-4))
    assert Fit().line() is None


def test_later_runs_outweigh_earlier_ones_when_the_machine_slows_down() -> None:
    fit = Fit()
    for _ in range(3):
        fit.add(20_000, 2.0)
    for _ in range(6):
        fit.add(20_000, 4.0)
    _, per_pixel = fit.line()  # type: ignore[misc]
    assert 3.5 / 20_000 < per_pixel < 4.0 / 20_000


def test_covered_pixels_count_the_overlaps_of_the_tiles() -> None:
    assert covered_pixels(100, 80, X4PLUS) == 8_000  # one tile
    # 320 px with 192 px tiles and 24 px of overlap: two tiles of 172 px
    assert covered_pixels(320, 100, X4PLUS) == 2 * 172 * 100
    assert covered_pixels(640, 480, X4PLUS) > 640 * 480


def test_a_run_recorded_by_one_process_is_read_by_another(tmp_path: Path) -> None:
    path = tmp_path / "costs" / "model-costs.json"
    worker, api = CostBook(path), CostBook(path)
    before = estimate(api, X4PLUS, 640, 480, "cpu", 2)
    assert before.basis == REFERENCE and before.seconds > 0
    worker.record(cost_key(X4PLUS, "cpu", 2), 10_000, 2.0)
    after = estimate(api, X4PLUS, 640, 480, "cpu", 2)
    assert after.basis == MEASURED
    assert after.seconds == pytest.approx(2e-4 * covered_pixels(640, 480, X4PLUS))
    assert estimate(api, X4PLUS, 640, 480, "cuda", 2).basis == REFERENCE  # another device


def test_an_unreadable_cost_file_is_measured_afresh(tmp_path: Path) -> None:
    path = tmp_path / "model-costs.json"
    path.write_text("{not json")
    book = CostBook(path)
    assert estimate(book, X4PLUS, 64, 64, "cpu", 2).basis == REFERENCE
    book.record(cost_key(X4PLUS, "cpu", 2), 4096, 1.0)
    assert estimate(CostBook(path), X4PLUS, 64, 64, "cpu", 2).seconds == pytest.approx(1.0)


CUGAN_X2 = SHIPPED.get("realcugan-x2")


def test_the_work_counts_each_tiles_padding_not_just_the_image_pixels() -> None:
    # Real-CUGAN ×2 pads every tile by 18 px a side: a one-tile 100×80 image runs 136×116
    assert covered_pixels(100, 80, CUGAN_X2) == 136 * 116
    # 400×400 is 3×3 tiles of 150 px (192 px tiles, 24 px overlap), each run padded
    assert covered_pixels(400, 400, CUGAN_X2) == 9 * (150 + 36) ** 2
    # so at the same measured line, the tiled image costs more than its pixels say
    book = CostBook(None)
    book.record_runs(cost_key(CUGAN_X2, "cpu", 2), [Run(10_000, 0.3), Run(50_000, 1.1)])
    per_pixel = (1.1 - 0.3) / 40_000
    overhead = 0.3 - per_pixel * 10_000
    tiled = estimate(book, CUGAN_X2, 400, 400, "cpu", 2)
    assert tiled.basis == MEASURED
    assert tiled.seconds == pytest.approx(overhead + per_pixel * 9 * 186 ** 2)
    assert tiled.seconds > overhead + per_pixel * 400 * 400 * 1.3


def test_the_fixed_cost_of_a_run_is_counted_once_per_image() -> None:
    book = CostBook(None)
    book.record_runs(cost_key(X4PLUS, "cpu", 2), [Run(1_024, 0.7), Run(20_000, 4.5)])
    small = estimate(book, X4PLUS, 32, 32, "cpu", 2).seconds
    large = estimate(book, X4PLUS, 1600, 1200, "cpu", 2).seconds
    per_pixel = (4.5 - 0.7) / (20_000 - 1_024)
    overhead = 0.7 - per_pixel * 1_024
    assert small == pytest.approx(0.7)
    assert large == pytest.approx(overhead + per_pixel * covered_pixels(1600, 1200, X4PLUS))
    # one run's seconds per pixel, the fixed part included, would say far more
    assert large < 0.7 / 1_024 * covered_pixels(1600, 1200, X4PLUS) / 3


def test_models_that_differ_only_in_weights_share_a_figure() -> None:
    assert cost_class(SHIPPED.get("realcugan-x2-denoise3")) == "realcugan-x2"
    assert cost_class(SHIPPED.get("realcugan-x2-conservative")) == "realcugan-x2"
    assert cost_class(SHIPPED.get("realcugan-x3")) != "realcugan-x2"
    assert cost_class(SHIPPED.get("realesrgan-x4plus-anime")) != cost_class(X4PLUS)
    book = CostBook(None)
    book.record(cost_key(CUGAN_X2, "cpu", 2), 10_000, 1.0)
    denoise = estimate(book, SHIPPED.get("realcugan-x2-denoise1"), 64, 64, "cpu", 2)
    assert denoise.basis == MEASURED


def test_a_figure_stands_only_for_the_runtime_and_threads_it_was_measured_with() -> None:
    book = CostBook(None)
    book.record(CostBook.key(X4PLUS.name, "cpu"), 10_000, 2.0)  # the old key: runtime unknown
    assert estimate(book, X4PLUS, 64, 64, "cpu", 2).basis == REFERENCE
    book.record(cost_key(X4PLUS, "cpu", 1), 10_000, 2.0)  # one thread, not two
    assert estimate(book, X4PLUS, 64, 64, "cpu", 2).basis == REFERENCE
    assert estimate(book, X4PLUS, 64, 64, "cpu", 1).basis == MEASURED
    assert "/openvino/" in cost_key(X4PLUS, "cpu", 2) or "/ncnn/" in cost_key(X4PLUS, "cpu", 2)


def test_a_busier_machine_lengthens_every_models_estimate_once_one_run_shows_it(
        tmp_path: Path) -> None:
    book = CostBook(tmp_path / "costs.json")
    anime = SHIPPED.get("realesrgan-x4plus-anime")
    # measured when quiet: 2 threads, so a second of wall-clock time is 2 CPU seconds
    book.record_runs(cost_key(X4PLUS, "cpu", 2), [Run(1_000, 0.1, 0.2), Run(20_000, 2.0, 4.0)])
    book.record(cost_key(anime, "cpu", 2), 20_000, 0.7, 1.4)
    quiet = estimate(book, anime, 640, 480, "cpu", 2).seconds
    assert estimate(book, X4PLUS, 640, 480, "cpu", 2).seconds == pytest.approx(
        2.0 / 20_000 * covered_pixels(640, 480, X4PLUS), rel=0.05)
    # then an x4plus run takes four times as long for the same CPU seconds: the machine is busy
    book.record(cost_key(X4PLUS, "cpu", 2), 20_000, 8.0, 4.0)
    busy = CostBook(tmp_path / "costs.json")  # as another process reads it
    assert estimate(busy, anime, 640, 480, "cpu", 2).seconds > 2.5 * quiet
    # the fit itself, in CPU seconds, did not move
    fit = busy.fit(cost_key(X4PLUS, "cpu", 2))
    assert fit is not None and fit.cpu
    assert fit.line()[1] == pytest.approx(4.0 / 20_000, rel=0.05)  # type: ignore[index]


def test_a_model_not_measured_yet_runs_at_the_pace_the_others_show(tmp_path: Path) -> None:
    book = CostBook(tmp_path / "costs.json")
    anime = SHIPPED.get("realesrgan-x4plus-anime")
    first = estimate(book, anime, 640, 480, "cpu", 2)
    assert first.basis == REFERENCE and first.cpu_seconds is not None
    # its work: the FLOPs of the pixels its tiles make the network run on
    assert first.cpu_seconds == pytest.approx(
        covered_pixels(640, 480, anime) * reference_cpu_seconds_per_pixel(anime))
    assert first.seconds >= first.cpu_seconds / 2  # two threads at best halve it
    # x4plus ran at 5 wall-clock seconds per CPU second just now: the machine is busy
    book.record(cost_key(X4PLUS, "cpu", 2), 20_000, 20.0, 4.0)
    busy = estimate(book, anime, 640, 480, "cpu", 2)
    assert busy.basis == REFERENCE
    assert busy.seconds == pytest.approx(5 * first.cpu_seconds)


def test_an_old_pace_gives_way_to_what_the_load_average_says(tmp_path: Path) -> None:
    path = tmp_path / "costs.json"
    book = CostBook(path)
    key = cost_key(X4PLUS, "cpu", 2)
    book.record(key, 20_000, 20.0, 4.0)
    assert book.pace(key, 2) == pytest.approx(5.0)
    raw = json.loads(path.read_text())
    raw["paces"][key.partition("|")[2]]["at"] -= PACE_FRESH_SECONDS + 1
    path.write_text(json.dumps(raw))
    stale = CostBook(path)
    before, pace, after = load_pace(2), stale.pace(key, 2), load_pace(2)
    assert pace in (before, after)  # the load average may tick over in between
    assert pace >= 0.5  # at best the two threads run side by side
