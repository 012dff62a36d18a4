"""How a batch's pixels travel: each input frame converted once, each result decoded once
straight into the output batch, and the 8-bit pixels kept between naming and uploading
given back whatever happens to the run."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from conftest import run_node, sample_image

from comfyui_fal_edit.nodes import imaging, pricing
from comfyui_fal_edit.nodes.caches import ItemResult
from comfyui_fal_edit.nodes.endpoints import BY_NODE
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from comfyui_fal_edit.nodes.stages import results as results_stage
from comfyui_fal_edit.nodes.stages.plan import WorkItem

SHARPEN = BY_NODE["FalSharpen"]


def counting(monkeypatch, module, name: str) -> list:
    """Replace module.name with a wrapper that records each call; the list of calls."""
    calls: list = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_each_input_frame_is_converted_once_and_each_result_decoded_once(fal, monkeypatch):
    conversions = counting(monkeypatch, imaging, "_frame_again")
    decodes = counting(monkeypatch, imaging, "decode")
    batch = sample_image(64, 48, batch=4, seed=3)
    images, _, _ = run_node("FalColorCorrection", image=batch, seed=10,
                            settings=FalSettings(cache="off"))
    assert images.shape == (4, 48, 64, 3)
    assert len(conversions) == 4, "an input frame was converted to 8 bits more than once"
    assert len(decodes) == 4, "a result was decoded again to build the batch"
    assert imaging.kept_pixel_bytes() == 0
    # The batch built as results arrived holds each item's own result, in input order.
    for i in range(4):
        single, _, _ = run_node("FalColorCorrection", image=batch[i:i + 1], seed=10 + i,
                                settings=FalSettings(cache="off"))
        assert torch.equal(single[0], images[i])


def test_cached_and_fresh_items_share_one_batch_in_order(fal):
    batch = sample_image(40, 40, batch=3, seed=4)
    middle, _, _ = run_node("FalColorCorrection", image=batch[1:2], seed=21)
    images, _, _ = run_node("FalColorCorrection", image=batch, seed=20)
    assert fal.state.count("submit") == 3, "the middle item should come from the cache"
    assert torch.equal(images[1], middle[0])
    assert imaging.kept_pixel_bytes() == 0


def test_kept_pixels_stay_within_the_process_budget(fal, monkeypatch):
    frame_bytes = 48 * 64 * 3
    monkeypatch.setattr(imaging, "KEEP_PIXELS_BYTES", 2 * frame_bytes)
    peak = [0]
    original_keep = imaging._keep

    def keep(nbytes):
        kept = original_keep(nbytes)
        peak[0] = max(peak[0], imaging.kept_pixel_bytes())
        return kept

    monkeypatch.setattr(imaging, "_keep", keep)
    conversions = counting(monkeypatch, imaging, "_frame_again")
    images, _, _ = run_node("FalColorCorrection", image=sample_image(64, 48, batch=5),
                            settings=FalSettings(cache="off"))
    assert images.shape[0] == 5
    assert peak[0] == 2 * frame_bytes, f"held {peak[0]} bytes, budget {2 * frame_bytes}"
    assert len(conversions) > 5, "frames past the budget must be derived again for upload"
    assert imaging.kept_pixel_bytes() == 0


@pytest.mark.parametrize("where", ["before any upload", "while uploading"])
def test_kept_pixels_are_given_back_when_the_run_fails(fal, where):
    if where == "before any upload":       # the spend guard stops it after naming the images
        asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
        fal.reset()
        chosen = FalSettings(cache="off", max_usd_per_prompt=0.01)
    else:
        fal.state.add_fault("upload", 500, times=50)
        chosen = FalSettings(cache="off")
    with pytest.raises(FalNodeError) as failure:
        run_node("FalColorCorrection", image=sample_image(32, 32, batch=3), settings=chosen)
    # Checked while the error's traceback still holds the run and its images: given back
    # by the run itself, not by the garbage collector.
    assert failure.traceback and imaging.kept_pixel_bytes() == 0


# -- assembly from what arrived ----------------------------------------------------

def _item(index: int, frame: np.ndarray, flagged: bool = False) -> WorkItem:
    item = WorkItem(index, [], {})
    blob = imaging.png_bytes(frame)
    item.result = ItemResult([None], [f"https://fal.media/files/{index}.png"], [flagged],
                             files=[blob], sizes=[frame.shape[:2]])
    return item


def _frame(width: int, height: int, value: int) -> np.ndarray:
    frame = np.full((height, width, 3), value, dtype=np.uint8)
    frame[0, 0] = (255, 0, 0)
    return frame


def _assemble(items, batch, **settings):
    return asyncio.run(results_stage.assemble(items, FalSettings(**settings), RuntimeError, batch))


def test_a_batch_started_at_another_items_size_is_rebuilt_at_the_first_items():
    """The batch takes the first *arriving* frame's size; the output must still take
    item 1's size (as ComfyUI's Batch Images does), with the others fitted to it."""
    first, second = _frame(32, 24, 100), _frame(50, 20, 200)
    items = [_item(0, first), _item(1, second)]
    batch = results_stage.OutputBatch(items, SHARPEN)
    batch.offer(1, 0, second)               # item 2 arrived first, at its own size
    answer = _assemble(items, batch)
    assert tuple(answer.images.shape) == (2, 24, 32, 3)
    assert torch.equal(answer.images[0], torch.from_numpy(first).float() / 255.0)
    assert any("resized" in note for note in answer.notes)


def test_frames_placed_on_arrival_are_not_decoded_again(monkeypatch):
    frames = [_frame(16, 8, 10 * (i + 1)) for i in range(3)]
    items = [_item(i, f) for i, f in enumerate(frames)]
    batch = results_stage.OutputBatch(items, SHARPEN)
    for i in (2, 0):                        # two arrived fresh; item 2 came from the cache
        batch.offer(i, 0, frames[i])
    decodes = counting(monkeypatch, imaging, "decode")
    answer = _assemble(items, batch)
    assert len(decodes) == 1, "only the frame not placed on arrival is decoded"
    for i, frame in enumerate(frames):
        assert torch.equal(answer.images[i], torch.from_numpy(frame).float() / 255.0)


def test_a_dropped_frame_leaves_no_gap_in_the_batch():
    frames = [_frame(16, 8, 40 * (i + 1)) for i in range(3)]
    items = [_item(0, frames[0]), _item(1, frames[1], flagged=True), _item(2, frames[2])]
    batch = results_stage.OutputBatch(items, SHARPEN)
    for i, frame in enumerate(frames):
        batch.offer(i, 0, frame)
    answer = _assemble(items, batch, nsfw_policy="drop flagged")
    assert answer.images.shape[0] == 2
    assert torch.equal(answer.images[1], torch.from_numpy(frames[2]).float() / 255.0)
