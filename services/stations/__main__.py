from services.runner import run
from services.stations.service import service

run(service)
