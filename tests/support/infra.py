"""Where the tests find RabbitMQ, Redis and PostgreSQL: the testing kit's discovery (csms.testing)."""
from csms.testing.infra import (
    DEFAULT_AMQP, DEFAULT_DATABASE, DEFAULT_REDIS, Infrastructure, start_infrastructure,
)

__all__ = ["DEFAULT_AMQP", "DEFAULT_DATABASE", "DEFAULT_REDIS", "Infrastructure", "start_infrastructure"]
