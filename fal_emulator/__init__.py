"""Local fal.ai emulator for tests and benchmarks (never loaded by ComfyUI).

Point the real fal-client at it by setting these ``fal_client.client``
globals (base = emulator.base_url):

    QUEUE_URL_FORMAT = base + "queue/"
    RUN_URL_FORMAT   = base + "run/"
    REST_URL         = base + "rest"
    CDN_URL          = base + "cdn"
"""

from .runner import FalEmulator
from .server import create_app
from .specs import ENDPOINTS
from .state import EmulatorState, FaultRule

__all__ = ["ENDPOINTS", "EmulatorState", "FalEmulator", "FaultRule", "create_app",
           "client_globals"]


def client_globals(base_url: str) -> dict:
    """The fal_client.client module globals to override for ``base_url``."""
    return {"QUEUE_URL_FORMAT": base_url + "queue/", "RUN_URL_FORMAT": base_url + "run/",
            "REST_URL": base_url + "rest", "CDN_URL": base_url + "cdn"}
