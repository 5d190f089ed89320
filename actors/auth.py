"""Ray's token authentication, set up before Ray is imported.

Kept apart from the rest of the Ray runtime because it must run before ``import ray``: Ray
reads ``RAY_AUTH_MODE`` when it is imported, and the processes a driver starts inherit the
environment, so a mode set afterwards would start a head whose driver cannot talk to it.
Imports nothing of Ray.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional


def prepare_ray_auth(address: Optional[str] = None) -> None:
    """Joining a cluster started with ``ray start`` needs ``RAY_AUTH_MODE=token`` in the
    environment before Ray is imported; set it when a token exists so users never meet
    ``InvalidAuthToken``. Set it too without an ``address``: the driver may join the Ray of the
    store's owner (another driver's local Ray, which turned token authentication on when it
    started because the token exists), and a local Ray it starts does the same either way.
    Without an address and with Ray already imported nothing is set: a mode set after the import
    would start a local head whose driver cannot talk to it."""
    if "ray" in sys.modules and (os.environ.get("RAY_AUTH_MODE") or address is None):
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
