from services.runner import run
from services.smart_charging.service import service

run(service)
