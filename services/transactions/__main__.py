from services.runner import run
from services.transactions.service import service

run(service)
