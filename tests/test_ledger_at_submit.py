"""A request counts from the moment it is sent (issue 20, item 0): at its estimate in the
ledger and today's spend, whatever becomes of its answer (refused, failed, timed out), and
taken back only when it provably never reached fal. A damaged daily spend file counts as
the daily ceiling reached, and is never overwritten."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from conftest import run_node, sample_image

from comfyui_fal_edit.nodes import pricing, server_settings
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from fal_emulator.server import EmulatorServer

COLOR = "FalColorCorrection"
PRICE = 0.05        # the emulator's price of color-correction, per image


@pytest.fixture
def priced(fal):
    """Prices from the emulator (fal's stand-in), the owner's default server here."""
    assert asyncio.run(pricing.prices.refresh("price-test-key-1234", fal.base_url))
    fal.reset()
    return fal


def test_a_request_counts_while_it_runs(priced):
    """Submitted, not yet answered: today's spend (what other workers and prompts check
    the daily ceiling against) already holds its estimate."""
    priced.state.latency_s = 1.5
    seen = {}

    def watch():
        deadline = time.monotonic() + 20
        while priced.state.count("submit") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        seen["today"] = server_settings.spent_today()
        seen["entries"] = [(e.estimated_usd, e.billed_usd) for e in pricing.ledger.entries()]

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_node(COLOR, image=sample_image(16, 16, seed=1))
    watcher.join()
    assert seen["today"] == pytest.approx(PRICE)
    assert seen["entries"] == [(pytest.approx(PRICE), None)]


def test_a_request_cancelled_by_the_timeout_stays_counted(priced):
    """timeout_s cancels a job fal is running: fal may bill it all the same."""
    priced.state.latency_s = 3.0
    with pytest.raises(FalNodeError, match="did not finish within 1s"):
        run_node(COLOR, image=sample_image(16, 16, seed=2), settings=FalSettings(timeout_s=1))
    assert priced.state.count("submit") == 1
    assert pricing.ledger.spent() == pytest.approx(PRICE)
    assert server_settings.spent_today() == pytest.approx(PRICE)
    [entry] = pricing.ledger.entries()
    assert entry.request_id and entry.billed_usd is None


def test_an_answer_the_pack_refuses_stays_counted(priced, monkeypatch):
    """fal made the images (and bills them); the pack refuses the answer (more files than
    asked for): the request still counts."""
    original = EmulatorServer._result_response

    def two_hundred_files(self, job):
        if job.result is not None and not job.__dict__.get("tampered"):
            job.result = {**job.result, "images": job.result["images"] * 200}
            job.tampered = True
        return original(self, job)

    monkeypatch.setattr(EmulatorServer, "_result_response", two_hundred_files)
    with pytest.raises(FalNodeError, match="lists 200 result files"):
        run_node(COLOR, image=sample_image(16, 16, seed=3))
    assert pricing.ledger.spent() == pytest.approx(PRICE)
    assert server_settings.spent_today() == pytest.approx(PRICE)


def test_a_submit_that_never_reached_fal_is_taken_back(priced):
    """fal's ingress refused every submit (nginx 503, no request id): no job was made, so
    nothing stays counted, and the run's hold is released."""
    priced.state.add_fault("submit", 503, times=-1)
    with pytest.raises(FalNodeError):
        run_node(COLOR, image=sample_image(16, 16, seed=4))
    assert pricing.ledger.entries() == [] and pricing.ledger.held() == 0
    assert server_settings.spent_today() == 0


DAMAGED = {
    "truncated": '{"%s": 3.5',
    "a string": '"lots"',
    "a list": "[1, 2]",
    "NaN": '{"%s": NaN}',
    "negative": '{"%s": -40}',
    "today a string": '{"%s": "12"}',
}


@pytest.mark.parametrize("damage", list(DAMAGED))
def test_a_damaged_spend_file_counts_as_the_daily_ceiling_reached(priced, damage):
    path = server_settings.spend_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = DAMAGED[damage].replace("%s", time.strftime("%Y-%m-%d"))
    path.write_text(text)
    with pytest.raises(FalNodeError) as err:
        run_node(COLOR, image=sample_image(16, 16, seed=5))
    message = str(err.value)
    assert message.startswith("fal Color Correction: the spend guard stopped this run")
    assert str(path) in message and "daily ceiling counts as reached" in message
    assert message.count(".") - str(path).count(".") == 1        # one sentence
    assert priced.state.log == []                                  # nothing sent
    assert path.read_text() == text                                # nor overwritten
    server_settings.adjust_spend(1.0)                              # a write elsewhere
    assert path.read_text() == text
    with pytest.raises(server_settings.SpendFileUnreadable):
        server_settings.spent_today()


def test_without_a_daily_ceiling_a_damaged_file_stops_nothing(priced):
    server_settings.update({"max_usd_per_day": 0})
    path = server_settings.spend_path()
    path.write_text("[]")
    run_node(COLOR, image=sample_image(16, 16, seed=6))
    assert priced.state.count("submit") == 1 and path.read_text() == "[]"


def test_the_settings_answer_says_why_spent_today_is_unknown(priced):
    from comfyui_fal_edit.nodes import routes
    path = server_settings.spend_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({time.strftime("%Y-%m-%d"): -1}))
    answer = routes._server_settings_answer(server_settings.load())
    assert answer["spent_today"] is None and str(path) in answer["spend_file_error"]
