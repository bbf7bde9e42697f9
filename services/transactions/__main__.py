from services.runner import run
from services.transactions.handlers import service

run(service)
