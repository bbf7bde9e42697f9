from services.runner import run
from services.diagnostics.service import service

run(service)
