"""The model cost book: fits from timed runs, shared through its file, and the estimates."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgq.ai.costs import MEASURED, REFERENCE, CostBook, Fit, covered_pixels, estimate
from imgq.ai.descriptors import SHIPPED

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
    worker.record(CostBook.key(X4PLUS.name, "cpu"), 10_000, 2.0)
    after = estimate(api, X4PLUS, 640, 480, "cpu", 2)
    assert after.basis == MEASURED
    assert after.seconds == pytest.approx(2e-4 * covered_pixels(640, 480, X4PLUS))
    assert estimate(api, X4PLUS, 640, 480, "cuda", 2).basis == REFERENCE  # another device


def test_an_unreadable_cost_file_is_measured_afresh(tmp_path: Path) -> None:
    path = tmp_path / "model-costs.json"
    path.write_text("{not json")
    book = CostBook(path)
    assert estimate(book, X4PLUS, 64, 64, "cpu", 2).basis == REFERENCE
    book.record(CostBook.key(X4PLUS.name, "cpu"), 4096, 1.0)
    assert estimate(CostBook(path), X4PLUS, 64, 64, "cpu", 2).seconds == pytest.approx(1.0)
