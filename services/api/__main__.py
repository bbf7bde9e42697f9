"""python -m services.api: the HTTP API process (its bus operations and the HTTP server)."""
from services.api.server import main

main()
