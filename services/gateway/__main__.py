"""``python -m services.gateway``: the websocket gateway as its own process (drains on SIGTERM).

A standalone gateway is a deployment's: it refuses GATEWAY_AUTH=none (exit 2, one line). Charge points without
credentials are let in only by the one-process development mode (``GATEWAY_AUTH=none python -m services.all``)
and by test systems that run the gateway in their own process (docs/adr/secure-defaults.md).
"""
import sys

from csms.config import Settings
from csms.ops.lifecycle import main
from services.gateway.app import Gateway

REFUSED_NONE = ("GATEWAY_AUTH=none is refused by a standalone gateway (python -m services.gateway): every charge "
                "point authenticates; only the development mode (python -m services.all) may let charge points in "
                "without credentials")


def standalone(settings: Settings) -> Settings:
    """Exit 2 with one line when the settings would let charge points in without credentials."""
    if settings.gateway_auth == "none":
        print(REFUSED_NONE, file=sys.stderr)
        raise SystemExit(2)
    return settings


if __name__ == "__main__":
    main("gateway", lambda settings: [Gateway(settings)], adjust=standalone)
