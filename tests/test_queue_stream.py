"""Completion pushed by fal's status stream, and polling when the stream can't be used."""

from __future__ import annotations

import pytest
import torch

import asyncio

from conftest import pack, run_node, sample_image

from comfyui_fal_edit.nodes.settings import FalSettings
from comfyui_fal_edit.nodes.stages import queue as queue_stage


def status_requests(fal) -> dict[str, int]:
    return {"stream": fal.state.count("status_stream"), "poll": fal.state.count("status")}


def test_completion_is_pushed_by_the_status_stream(fal, statuses):
    fal.state.latency_s = 1.0
    fal.state.progress_steps = 4
    images, _, _ = run_node("FalSharpen", image=sample_image(48, 32, batch=2),
                            settings=FalSettings(cache="off"))
    assert images.shape == (2, 32, 48, 3)
    # One stream per request, and not a single status poll.
    assert status_requests(fal) == {"stream": 2, "poll": 0}
    # fal's log lines arrive through the stream and show on the node.
    assert any("step " in text for text in statuses), statuses


@pytest.mark.parametrize("mode", ["off", "drop", "buffer"])
def test_an_unusable_stream_falls_back_to_polling(fal, mode, monkeypatch, capture_logs):
    """A server without the stream (404), one that drops it mid-way, and a proxy that holds it
    back until the end: every request still completes, by polling, and the log says so once."""
    monkeypatch.setattr(queue_stage, "STREAM_SILENCE_S", 0.3)
    fal.state.status_stream = mode
    fal.state.latency_s = 0.8
    images, _, _ = run_node("FalSharpen", image=sample_image(48, 32, batch=2),
                            settings=FalSettings(cache="off"))
    expected, _, _ = run_node("FalSharpen", image=sample_image(48, 32, batch=2),
                              settings=FalSettings(cache="use"))   # served by the same jobs' cache
    assert torch.equal(images, expected)
    counts = status_requests(fal)
    assert counts["stream"] == 2 and counts["poll"] >= 2, counts
    said = [line for line in capture_logs if "status stream is not usable" in line]
    assert len(said) == 1, said
    assert fal.state.count("submit") == 2, "falling back must not submit again"


def test_a_status_fault_on_the_stream_still_completes(fal):
    fal.state.latency_s = 0.3
    fal.state.add_fault("status", 503, times=1)
    images, _, _ = run_node("FalColorCorrection", image=sample_image(32, 32))
    assert images.shape[0] == 1
    assert fal.state.count("status_stream") == 1 and fal.state.count("submit") == 1


# -- a list input: many calls at once, one budget ----------------------------------

def max_in_flight(fal) -> int:
    """The most requests fal had at once, from the order of submits and finishes."""
    in_flight = peak = 0
    for entry in fal.state.log:
        if entry["kind"] == "submit":
            in_flight += 1
            peak = max(peak, in_flight)
        elif entry["kind"] == "finished":
            in_flight -= 1
    return peak


def test_the_calls_of_a_list_share_one_budget_and_one_client(fal):
    """ComfyUI calls a node once per list item, all at once on one loop: `concurrency`
    bounds them together, and they share one fal client (one upload token)."""
    fal.state.latency_s = 0.4

    async def comfy_runs_a_list_of_nine():
        node = pack.NODE_CLASS_MAPPINGS["FalSharpen"]()
        calls = [node.run(image=sample_image(32, 32, seed=i),
                          settings=FalSettings(concurrency=3, cache="off")) for i in range(9)]
        return await asyncio.gather(*calls)

    outputs = asyncio.run(comfy_runs_a_list_of_nine())
    assert len(outputs) == 9 and fal.state.count("submit") == 9
    assert max_in_flight(fal) == 3
    assert fal.state.count("token") == 1, "each call opened its own fal client"


def test_a_cancelled_call_gives_back_its_place_in_the_budget(fal):
    from comfyui_fal_edit.nodes.concurrency import budget

    fal.state.latency_s = 5

    async def cancel_while_others_wait():
        node = pack.NODE_CLASS_MAPPINGS["FalSharpen"]()
        tasks = [asyncio.create_task(node.run(image=sample_image(32, 32, seed=i),
                                              settings=FalSettings(concurrency=1)))
                 for i in range(3)]
        while fal.state.count("submit") == 0:
            await asyncio.sleep(0.02)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(cancel_while_others_wait())
    assert budget.in_flight == 0 and not budget._waiting
    assert fal.state.count("cancel") == 1 and fal.state.count("submit") == 1


def test_a_cancel_that_lands_as_the_awaited_thing_finishes_is_not_lost():
    """Python 3.10/3.11's asyncio.wait_for returns the result and drops the cancel when both
    happen in one loop turn (CPython gh-86296): a stream event arriving with the user's
    interrupt then let the fal request run, and bill, to its end. `within` keeps the cancel."""
    from comfyui_fal_edit.nodes.concurrency import within

    async def cancel_as_it_finishes(wait) -> str:
        arrived = asyncio.get_running_loop().create_future()
        waiter = asyncio.create_task(wait(arrived, 5))
        await asyncio.sleep(0)              # the waiter is now waiting
        arrived.set_result("a status from fal")
        waiter.cancel()
        try:
            return await waiter
        except asyncio.CancelledError:
            return "cancelled"

    assert asyncio.run(cancel_as_it_finishes(within)) == "cancelled"


def test_within_times_out_and_stops_what_it_waited_for():
    from comfyui_fal_edit.nodes.concurrency import within

    async def slow_then_quick() -> tuple[bool, str]:
        stopped = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            finally:
                stopped.set()

        try:
            await within(slow(), 0.05)
        except asyncio.TimeoutError:
            pass
        return stopped.is_set(), await within(asyncio.sleep(0, "quick"), 1)

    assert asyncio.run(slow_then_quick()) == (True, "quick")


def test_the_runtime_waits_with_deadlines_only_through_within():
    """One place decides how a deadline meets a cancel: a plain asyncio.wait_for in the
    runtime would bring the lost-cancel race back."""
    from pathlib import Path

    nodes_dir = Path(pack.__file__).parent / "nodes"
    offenders = [str(p.relative_to(nodes_dir)) for p in nodes_dir.rglob("*.py")
                 if "asyncio.wait_for(" in p.read_text(encoding="utf-8")]
    assert offenders == []
