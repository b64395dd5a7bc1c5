"""Everything from and to Stripe: the rate-limited gateway, webhook signatures, event shapes, applying events."""
