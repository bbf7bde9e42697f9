"""Where the tests find RabbitMQ, Redis and PostgreSQL: the testing kit's discovery (csms.testing)."""
from csms.testing.infra import Infrastructure, start_infrastructure

__all__ = ["Infrastructure", "start_infrastructure"]
