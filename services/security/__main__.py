from services.security.handlers import service
from services.runner import run

run(service)
