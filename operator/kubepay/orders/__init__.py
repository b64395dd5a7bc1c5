"""From an order to its PaymentIntent: shared intake for the HTTP API and the orders.created consumer."""
