"""``python -m services.gateway``: the websocket gateway as its own process (drains on SIGTERM)."""
from csms.ops.lifecycle import main
from services.gateway.app import Gateway

main("gateway", lambda settings: [Gateway(settings)])
