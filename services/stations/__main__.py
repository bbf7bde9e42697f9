from services.runner import run
from services.stations.handlers import service

run(service)
