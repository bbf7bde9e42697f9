"""The OCPP 1.6J websocket gateway: stateless, bridges every frame to RabbitMQ."""
