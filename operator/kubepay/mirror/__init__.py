"""From a resource's status downstream: the PostgreSQL rows and the Kafka messages, each once."""
