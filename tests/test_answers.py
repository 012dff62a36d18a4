"""Answers are checked before they cost memory, disk or a paid result: how many files,
where they come from, how big they are, NSFW flags and seeds that are not what they say.

The emulator plays a server whose answers were tampered with: its result JSON is
rewritten per test."""

from __future__ import annotations

import struct
import zlib

import httpx
import pytest

from conftest import run_node, sample_image
from servers import Recorder

from comfyui_fal_edit.nodes import egress, imaging
from comfyui_fal_edit.nodes.errors import FalNodeError
from comfyui_fal_edit.nodes.settings import FalSettings
from fal_emulator.server import EmulatorServer, FileStore

FLUX = "FalFluxDevImageToImage"


@pytest.fixture
def answer(fal, monkeypatch):
    """answer(change): every result JSON the emulator sends goes through change(result)."""
    original = EmulatorServer._result_response

    def install(change):
        def tampered(self, job):
            if job.result is not None and not job.__dict__.get("tampered"):
                job.result = change(dict(job.result))
                job.tampered = True
            return original(self, job)
        monkeypatch.setattr(EmulatorServer, "_result_response", tampered)
    return install


def stored_file(fal, data: bytes, name: str = "x.png", kind: str = "image/png") -> str:
    file_id = fal.server.files.put(data, kind, name)
    return FileStore.url(fal.base_url, file_id, name)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (its pixel data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def run_flux(**values):
    return run_node(FLUX, image=sample_image(48, 32), prompt="a duck", **values)


def test_more_result_files_than_asked_for_are_refused(fal, answer):
    answer(lambda r: {**r, "images": r["images"] * 200})
    with pytest.raises(FalNodeError, match="lists 200 result files where 1 was asked for"):
        run_flux()
    assert fal.state.count("file") == 0          # none was downloaded


def test_an_up_to_count_that_brought_fewer_is_billed_for_what_came(fal, answer, statuses,
                                                                   monkeypatch):
    """Seedream's max_images is "up to": the guard counted 3 images, fal made 2 (the answer
    lists 2, and fal's bill says 2); the ledger and the daily count take 2 x $0.04."""
    from comfyui_fal_edit.nodes import pricing, server_settings
    from fal_emulator import billing
    seedream = "fal-ai/bytedance/seedream/v4.5/edit"
    answer(lambda r: {**r, "images": r["images"][:2]})
    monkeypatch.setattr(billing, "billable_units", lambda *args: 2.0)
    images, *_ = run_node("FalImageEndpoint", endpoint=seedream, image=sample_image(24, 24),
                          arguments='{"prompt": "x", "max_images": 3}')
    assert images.shape[0] == 2
    assert "≈ $0.080 for the images fal made (≈ $0.120 if it had made all" in statuses[-1]
    assert "billed $0.080 by fal" in statuses[-1]
    assert pricing.ledger.spent() == pytest.approx(0.08)
    assert server_settings.spent_today() == pytest.approx(0.08)


def test_a_result_file_is_capped_while_it_streams(fal, answer, monkeypatch):
    from comfyui_fal_edit.nodes.stages import results
    monkeypatch.setattr(results, "MAX_FILE_BYTES", 4 << 20)   # 4 MiB here: quicker
    big = stored_file(fal, b"\x89PNG\r\n\x1a\n" + b"\0" * (6 << 20))
    answer(lambda r: {**r, "images": [{**r["images"][0], "url": big}]})
    with pytest.raises(FalNodeError, match="passed 4 MiB, so it was refused while downloading"):
        run_flux()


def test_an_image_too_large_to_decode_is_refused_from_its_header(fal, answer):
    huge = stored_file(fal, png_header(12000, 12000))
    answer(lambda r: {**r, "images": [{**r["images"][0], "url": huge}]})
    with pytest.raises(FalNodeError, match="claims 12000x12000 pixels, more than the 100 MP"):
        run_flux()
    with pytest.raises(imaging.TooManyPixels):
        imaging.decode(png_header(20000, 20000))


def test_result_urls_are_only_fetched_from_fal_or_the_runs_server(fal, answer):
    with Recorder() as other:
        elsewhere = other.base_url + "files/secret.png"
        answer(lambda r: {**r, "images": [{**r["images"][0], "url": elsewhere}]})
        with pytest.raises(FalNodeError, match=f"points to 127.0.0.1:{other.port}, which is "
                                               f"neither one of fal's file hosts"):
            run_flux()
        assert other.requests == []
    run = egress.Destination("server", fal.base_url)
    assert run.accepts_result_url(fal.base_url + "files/a/b.png")
    assert run.accepts_result_url("https://v3.fal.media/files/x.png")
    assert run.accepts_result_url("https://fal.media/files/x.png")
    assert not run.accepts_result_url("http://v3.fal.media/files/x.png")
    assert not run.accepts_result_url("https://v3.fal.media.evil.example/x.png")
    assert not egress.FAL.accepts_result_url("http://169.254.169.254/latest/meta-data")


@pytest.mark.asyncio
async def test_no_redirect_to_a_private_address():
    with Recorder() as inside, Recorder() as redirecting:
        redirecting.redirect_to = inside.base_url + "admin"
        run = egress.Destination("server", redirecting.base_url)
        async with httpx.AsyncClient(transport=egress.download_transport(run),
                                     follow_redirects=True) as http:
            with pytest.raises(egress.EgressRefused, match=f"127.0.0.1:{inside.port}"):
                await http.get(redirecting.base_url + "files/a.png")
        assert len(redirecting.requests) == 1 and inside.requests == []
    assert egress.FAL.may_redirect_to("https://storage.googleapis.com/x")
    for private in ("https://10.0.0.5/x", "https://192.168.1.1/x", "https://[::1]/x",
                    "https://localhost/x", "http://storage.googleapis.com/x"):
        assert not egress.FAL.may_redirect_to(private), private


@pytest.mark.parametrize("flags", ["true", {"0": True}, [], ["no"], [0], None])
@pytest.mark.parametrize("policy", ["drop flagged", "error"])
def test_malformed_nsfw_flags_count_as_flagged(fal, answer, flags, policy):
    answer(lambda r: {**r, "has_nsfw_concepts": flags})
    with pytest.raises(FalNodeError, match="NSFW"):
        run_flux(settings=FalSettings(nsfw_policy=policy))


def test_clear_flags_still_pass(fal, answer):
    answer(lambda r: {**r, "has_nsfw_concepts": [False, True]})
    images, _, _ = run_flux(num_images=2, settings=FalSettings(nsfw_policy="drop flagged"))
    assert images.shape[0] == 1


@pytest.mark.parametrize("seed", [float("nan"), float("inf"), "7", None])
def test_a_seed_that_is_not_a_number_keeps_the_paid_result(fal, answer, seed):
    answer(lambda r: {**r, "seed": seed})
    images, first_seed, _ = run_flux(seed=1234)
    assert images.shape[0] == 1 and first_seed == 1234    # the seed that was sent
    run_flux(seed=1234)                                    # the result was kept
    assert fal.state.count("submit") == 1


def test_an_oversized_answer_is_refused_as_it_streams(fal, answer, monkeypatch):
    monkeypatch.setattr(egress, "MAX_ANSWER_BYTES", 1 << 20)
    answer(lambda r: {**r, "padding": "x" * (2 << 20)})
    with pytest.raises(FalNodeError, match=r"sent an answer of 2 MiB, more than the 1 MiB"):
        run_flux()


@pytest.mark.asyncio
async def test_an_answer_without_a_length_is_cut_off_at_the_cap(monkeypatch):
    monkeypatch.setattr(egress, "MAX_ANSWER_BYTES", 1 << 20)

    async def endless():
        for _ in range(100):
            yield b"x" * 65536

    inner = httpx.MockTransport(lambda request: httpx.Response(200, content=endless()))
    async with httpx.AsyncClient(transport=egress.egress_transport(egress.FAL, inner)) as http:
        with pytest.raises(egress.EgressRefused, match="larger than 1 MiB"):
            await http.get("https://queue.fal.run/fal-ai/x/requests/1")


@pytest.mark.asyncio
async def test_a_compressed_answer_is_counted_unpacked(monkeypatch):
    """A gzip answer of 8 KB that unpacks to 8 MiB passes a cap on what arrives; it is
    refused at the cap on what it unpacks to, before httpx holds it all."""
    import gzip
    monkeypatch.setattr(egress, "MAX_ANSWER_BYTES", 1 << 20)
    bomb = gzip.compress(b" " * (8 << 20), compresslevel=9)
    assert len(bomb) < 64 << 10
    seen_encodings = []

    def answer(request):
        seen_encodings.append(request.headers.get("accept-encoding"))
        return httpx.Response(200, content=bomb, headers={"content-encoding": "gzip",
                                                          "content-type": "application/json"})

    inner = httpx.MockTransport(answer)
    async with httpx.AsyncClient(transport=egress.egress_transport(egress.FAL, inner)) as http:
        with pytest.raises(egress.EgressRefused, match="larger than 1 MiB"):
            await http.get("https://queue.fal.run/fal-ai/x/requests/1")
    assert seen_encodings == ["gzip, deflate"]


def test_a_gzip_answer_from_the_queue_is_refused_at_the_cap_it_unpacks_to(fal, monkeypatch):
    """End to end through fal-client: the result answer arrives as 4 KB of gzip that
    unpacks past the cap; the node fails in one sentence naming the host and the fix."""
    import gzip

    from aiohttp import web
    monkeypatch.setattr(egress, "MAX_ANSWER_BYTES", 1 << 20)

    def packed(self, job):
        body = gzip.compress(b'{"images": [], "pad": "' + b" " * (4 << 20) + b'"}')
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})
    monkeypatch.setattr(EmulatorServer, "_result_response", packed)
    with pytest.raises(FalNodeError) as caught:
        run_node("FalSharpen", image=sample_image(16, 16))
    assert str(caught.value).startswith("fal Sharpen: ")
    assert "sent an answer larger than 1 MiB, so it was refused; run again, and check " \
           "base_url if it persists" in str(caught.value)


@pytest.mark.asyncio
@pytest.mark.parametrize("encoding", ["gzip", "deflate", ""])
async def test_a_compressed_answer_within_the_cap_reads_as_usual(encoding):
    import gzip
    body = b'{"images": [{"url": "https://v3.fal.media/files/x.png"}], "seed": 1}' * 100
    packed = {"gzip": gzip.compress(body), "deflate": zlib.compress(body), "": body}[encoding]
    headers = {"content-encoding": encoding} if encoding else {}
    inner = httpx.MockTransport(lambda request: httpx.Response(200, content=packed,
                                                                headers=headers))
    async with httpx.AsyncClient(transport=egress.egress_transport(egress.FAL, inner)) as http:
        response = await http.get("https://queue.fal.run/fal-ai/x/requests/1")
    assert response.content == body


@pytest.mark.asyncio
async def test_an_answer_packed_in_an_encoding_not_asked_for_is_refused():
    inner = httpx.MockTransport(lambda request: httpx.Response(
        200, content=b"\x00" * 16, headers={"content-encoding": "br"}))
    async with httpx.AsyncClient(transport=egress.egress_transport(egress.FAL, inner)) as http:
        with pytest.raises(egress.EgressRefused, match="packed as 'br'"):
            await http.get("https://queue.fal.run/fal-ai/x/requests/1")


@pytest.mark.asyncio
async def test_a_public_name_that_leads_inside_is_refused_before_its_body():
    """https://files.example.com resolving to 10.0.0.5 (or 127.0.0.1): the connection tells
    where it went; nothing of the body is used."""
    class Connection:
        def __init__(self, address):
            self.address = address

        def get_extra_info(self, name):
            return (self.address, 443) if name == "server_addr" else None

    for address, refused in (("10.0.0.5", True), ("127.0.0.1", True), ("34.120.1.2", False)):
        def answer(request, address=address):
            return httpx.Response(200, content=b"pixels",
                                  extensions={"network_stream": Connection(address)})

        transport = egress.download_transport(egress.FAL, inner=httpx.MockTransport(answer))
        async with httpx.AsyncClient(transport=transport) as http:
            if refused:
                with pytest.raises(egress.EgressRefused, match=f"private address {address}"):
                    await http.get("https://files.example.com/x.png")
            else:
                assert (await http.get("https://files.example.com/x.png")).content == b"pixels"
