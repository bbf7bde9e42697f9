from services.diagnostics.handlers import service
from services.runner import run

run(service)
