"""Real PostgreSQL, Kafka (tansu) and a Stripe fake (localstripe) on 127.0.0.1 for tests and demos."""
