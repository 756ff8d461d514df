"""Session-scoped embedded Kafka broker fixture (owned by the Kafka transport work)."""
