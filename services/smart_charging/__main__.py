from services.runner import run
from services.smart_charging.handlers import service

run(service)
