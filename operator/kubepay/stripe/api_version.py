"""The Stripe API version kubepay speaks, importable without the Stripe library (the receiver reports it too)."""

# The API version the pinned stripe-python (16.x) speaks; requests say it explicitly, so a change of the
# account's default version in the Dashboard changes nothing here. Give webhook endpoints the same version.
STRIPE_API_VERSION = "2026-10-28.endive"
