"""kubepay's local harness (the `kubepay-sandbox` distribution, development only): PostgreSQL, Kafka, a Stripe fake
and a Kubernetes API emulator on 127.0.0.1, or the real parts, for the tests, `make demo` and the benchmarks."""
