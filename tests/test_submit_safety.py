"""Submits that never bill twice, accounts fal refuses, fal's start deadline (issue 20,
items 1, 4 and 5), against the emulator with the real fal-client.

- A submit is sent again only when it provably never reached fal; after an answer is
  lost (the job may exist, and be billed) at most once more, and the node says so.
- An account fal refuses (locked: exhausted balance; a bad key) costs one submit per
  loop: the rest of the batch and the other calls of a list input are not sent.
- The submit carries X-Fal-Request-Timeout from the node's timeout_s, so a request fal
  never started ends on fal's side, unbilled; the time queued and running is shown.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import reliability_helpers as rh
from conftest import TEST_KEY, pack, run_node, sample_image
from reliability_helpers import sentence_problems

from comfyui_fal_edit.nodes.concurrency import loop_clients
from comfyui_fal_edit.nodes.endpoints import BY_NODE
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.fal_transport import close_fal_client, fal_client_for_run
from comfyui_fal_edit.nodes import egress
from comfyui_fal_edit.nodes.runtime import Run
from comfyui_fal_edit.nodes.settings import FalSettings
from comfyui_fal_edit.nodes.stages import queue as queue_stage
from comfyui_fal_edit.nodes.stages.plan import WorkItem, build_payload

NODE = "FalColorCorrection"
ENDPOINT = BY_NODE[NODE]
DISPLAY = ENDPOINT.display_name
BOUND_S = 20.0


@pytest.fixture
def short_retries(monkeypatch):
    import fal_client.client as fc
    monkeypatch.setattr(fc, "MAX_ATTEMPTS", 3)


def jobs(fal) -> int:
    """Jobs fal made (and bills): submits the emulator accepted, lost answers included."""
    return sum(1 for e in fal.state.entries("submit") if e["request_id"] in fal.server.jobs)


# -- item 1: a lost answer is resent at most once -----------------------------------------

def test_one_lost_answer_makes_at_most_two_jobs_and_the_result_arrives(fal, statuses):
    fal.state.add_fault("submit", "lost_answer", times=1)
    images, _, _ = run_node(NODE, image=sample_image(seed=41))
    assert images.shape[0] == 1
    assert jobs(fal) == 2 and fal.state.count("answer_lost") == 1
    assert "fal may have billed 1 request whose answer was lost" in statuses[-1], statuses[-1]


@pytest.mark.parametrize("losses", [2, 5])
def test_repeated_lost_answers_make_two_jobs_and_one_sentence(fal, statuses, losses):
    fal.state.add_fault("submit", "lost_answer", times=losses)
    out = rh.run_guarded(NODE, BOUND_S, image=sample_image(seed=42))
    assert not out.hung and isinstance(out.error, FalNodeError), out.error
    assert jobs(fal) == 2, "a submit was sent again after two lost answers"
    message = str(out.error)
    assert sentence_problems(message, DISPLAY) == [], message
    assert "fal may have billed 2 requests whose answers were lost" in message
    assert message in statuses[-1]


def _queue_run(fal, on_sent, on_unsent, timeout_s: float = 60.0):
    """Submit one payload through FalQueue as a run does; the item, the handle or error."""
    async def main():
        client = fal_client_for_run(TEST_KEY, egress.resolve(""))
        item = WorkItem(0, [], {})
        item.deadline = asyncio.get_running_loop().time() + timeout_s
        queue = queue_stage.FalQueue(client, ENDPOINT.endpoint_id, timeout_s, DISPLAY,
                                     on_sent=on_sent, on_unsent=on_unsent)
        payload = {**build_payload(ENDPOINT, {}), "image_url": "data:image/png;base64,"}
        try:
            await queue._submit(item, payload)
            return item, None
        except Exception as exc:
            return item, exc
        finally:
            await close_fal_client(client)
    return asyncio.run(main())


def test_failures_before_fal_are_resent_freely_and_taken_back(fal, short_retries):
    """Two answers from fal's ingress (nginx 503, no request id) made no job: each is sent
    again and its charge taken back; the lost answer after them allows one more submit."""
    calls: list[str] = []

    async def sent(item):
        calls.append("sent")

    async def unsent(item):
        calls.append("unsent")

    fal.state.add_fault("submit", 503, times=2)
    fal.state.add_fault("submit", "lost_answer", times=1)
    item, error = _queue_run(fal, sent, unsent)
    assert error is None and item.request_id
    assert calls == ["sent", "unsent", "sent", "unsent", "sent", "sent"]
    assert item.lost_submits == 1
    assert fal.state.count("answer_lost") == 1 and jobs(fal) == 2


def test_a_refused_connection_is_resent_and_never_counted_as_lost(fal, short_retries,
                                                                   monkeypatch):
    with socket.socket() as s:                     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("COMFYUI_FAL_BASE_URL", f"http://127.0.0.1:{port}/")
    calls: list[str] = []

    async def sent(item):
        calls.append("sent")

    async def unsent(item):
        calls.append("unsent")

    item, error = _queue_run(fal, sent, unsent)
    assert error is not None and type(error).__name__ == "ConnectError"
    assert calls == ["sent", "unsent"] * 3 and item.lost_submits == 0


# -- item 4: an account fal refuses ends the batch and the list ---------------------------

def test_a_locked_account_costs_one_submit_for_a_batch_of_8(fal):
    fal.state.locked_keys = {TEST_KEY}
    out = rh.run_guarded(NODE, BOUND_S, image=sample_image(48, 40, batch=8, seed=43))
    assert isinstance(out.error, FalNodeError), out.error
    message = str(out.error)
    assert jobs(fal) == 0 and len(fal.state.entries("submit")) == 1
    assert sentence_problems(message, DISPLAY) == [], message
    assert "locked" in message and "exhausted balance" in message
    assert "https://fal.ai/dashboard/billing" in message
    assert "7 of them were not sent" in message
    assert TEST_KEY not in message


def test_a_locked_account_stops_the_other_calls_of_a_list(fal):
    """A list input: ComfyUI calls the node once per item, all at once on one loop."""
    fal.state.locked_keys = {TEST_KEY}

    async def main():
        node = pack.NODE_CLASS_MAPPINGS[NODE]()
        return await asyncio.gather(*(node.run(image=sample_image(seed=50 + i))
                                      for i in range(4)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, FalNodeError) for r in results), results
    assert len(fal.state.entries("submit")) == 1
    assert all("https://fal.ai/dashboard/billing" in str(r) for r in results)

    fal.state.locked_keys = set()          # topped up: the next run is sent as usual
    images, _, _ = run_node(NODE, image=sample_image(seed=50))
    assert images.shape[0] == 1


def test_a_rejected_key_is_one_submit_and_names_where_to_get_a_key(fal):
    fal.state.add_fault("submit", 401, times=-1)
    out = rh.run_guarded(NODE, BOUND_S, image=sample_image(48, 40, batch=4, seed=44))
    message = str(out.error)
    assert len(fal.state.entries("submit")) == 1
    assert sentence_problems(message, DISPLAY) == [], message
    assert "HTTP 401" in message and "https://fal.ai/dashboard/keys" in message


# -- item 5: fal's start deadline, queue time and run time --------------------------------

def test_the_submit_carries_a_start_deadline_within_timeout_s(fal):
    run_node(NODE, image=sample_image(seed=45), settings=FalSettings(timeout_s=120))
    sent = float(fal.state.entries("submit")[0]["start_timeout"])
    assert 1 < sent <= 120


def test_a_request_fal_never_started_ends_on_fals_side_unbilled(fal):
    fal.state.queue_delay_s = 30.0        # fal's queue never gets to it in time
    out = rh.run_guarded(NODE, BOUND_S, image=sample_image(seed=46),
                         settings=FalSettings(timeout_s=4))
    message = str(out.error)
    assert sentence_problems(message, DISPLAY) == [], message
    assert "did not bill it" in message and "timeout_s" in message
    [finished] = fal.state.entries("finished")
    assert finished["error_type"] == "request_timeout" and finished["started"] is False
    kinds = [e["kind"] for e in fal.state.log]
    assert "cancel" not in kinds[:kinds.index("finished")], "the node ended it, not fal"


def test_queue_time_and_run_time_are_recorded_and_shown(fal, statuses):
    fal.state.queue_delay_s, fal.state.latency_s = 0.5, 0.8
    run = Run(ENDPOINT, FalSettings(), None)

    async def main():
        async with loop_clients():
            return await run.execute(build_payload(ENDPOINT, {}), [sample_image(seed=47)])

    outcome = asyncio.run(main())
    [item] = run.items
    # Measured from fal's statuses as they arrive: about what the emulator held it (half of
    # it at least, whatever the delivery delays), each in its own figure.
    assert item.queue_s is not None and item.queue_s >= 0.25
    assert item.run_s is not None and item.run_s >= 0.4
    assert "queued" in outcome.status and "ran" in outcome.status and "on fal" in outcome.status


class _MockFalClient:
    """What submit uses of a run's fal client, answering through `answer(request)`."""

    default_timeout = 5.0

    def __init__(self, answer) -> None:
        import httpx
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(answer))

    @property
    def _client(self):
        async def value():
            return self.http
        return value()

    async def get_handle(self, application: str, request_id: str):
        import fal_client
        return fal_client.AsyncRequestHandle.from_request_id(self.http, application, request_id)


def _submit_through(answer, on_sent=None, on_unsent=None):
    """submit() one payload against `answer`; (the item, the handle)."""
    from comfyui_fal_edit.nodes.stages import submit as submit_stage

    async def main():
        client = _MockFalClient(answer)
        item = WorkItem(0, [], {})
        try:
            return item, await submit_stage.submit(client, ENDPOINT.endpoint_id, {"x": 1}, item,
                                                   on_sent=on_sent, on_unsent=on_unsent)
        finally:
            await client.http.aclose()
    return asyncio.run(main())


def test_an_answer_cut_off_after_its_request_id_is_not_lost():
    """fal's answer broke off mid-body, but its x-fal-request-id header had arrived: the
    job is known, so it is followed, not submitted again (and not counted as lost)."""
    import httpx

    class CutOff(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b'{"request_id": "abc'
            raise httpx.ReadError("connection reset")

    posts: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posts.append(request)
        return httpx.Response(200, headers={"x-fal-request-id": "req-123"}, stream=CutOff())

    item, handle = _submit_through(answer)
    assert handle.request_id == "req-123" and len(posts) == 1 and item.lost_submits == 0
    assert ENDPOINT.endpoint_id.split("/")[1] in handle.status_url


def test_a_429_is_sent_again_even_with_a_request_id():
    """A 429 makes no job, whoever answers it: sent again (as fal-client does), its charge
    taken back; a 503 with fal's request id came from fal itself and is not."""
    import httpx

    calls: list[str] = []

    async def sent(item):
        calls.append("sent")

    async def unsent(item):
        calls.append("unsent")

    answers = iter([httpx.Response(429, json={"detail": "Rate limit exceeded"},
                                   headers={"x-fal-request-id": "r1"}),
                    httpx.Response(200, json={"request_id": "r2", "response_url": "u",
                                              "status_url": "s", "cancel_url": "c"})])
    item, handle = _submit_through(lambda request: next(answers), sent, unsent)
    assert handle.request_id == "r2" and calls == ["sent", "unsent", "sent"]

    import fal_client
    calls.clear()
    with pytest.raises(fal_client.FalClientHTTPError):
        _submit_through(lambda request: httpx.Response(
            503, text="busy", headers={"x-fal-request-id": "r3"}), sent, unsent)
    assert calls == ["sent"], "a 5xx from fal itself is neither sent again nor taken back"
