"""Where data comes from and goes to: source connectors, Kafka transport and the Lance store."""
