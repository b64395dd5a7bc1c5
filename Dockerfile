# syntax=docker/dockerfile:1
# One image for every kubepay process: `kubepay operator|webhook|migrate|api`.
#   docker build -t kubepay:dev .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with kubepay and its dependencies, from wheels only -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/kubepay
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY webhook ./webhook
# kubepay itself is pure Python (built here with setuptools); every dependency must come as a
# binary wheel (--only-binary), so no compiler is ever needed, in this stage or the next.
RUN /opt/kubepay/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/kubepay/bin/pip install --only-binary=:all: /wheels/kubepay-*.whl \
 && /opt/kubepay/bin/pip uninstall --yes pip setuptools \
 && find /opt/kubepay -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/kubepay/bin/python -m compileall -q /opt/kubepay/lib

# --- runtime: the virtualenv, the migrations, a non-root user --------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kubepay" \
      org.opencontainers.image.description="Payments the Kubernetes way: PaymentIntent CRD, Stripe, PostgreSQL, Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 kubepay \
 && useradd --system --uid 10001 --gid kubepay --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin kubepay
COPY --from=build /opt/kubepay /opt/kubepay
COPY migrations /app/migrations
ENV PATH=/opt/kubepay/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KUBEPAY_MIGRATIONS_DIR=/app/migrations
WORKDIR /app
USER 10001:10001
# controller: 8090 health, 9090 metrics, 9443 admission; receiver: 8080; api: 8081
EXPOSE 8080 8081 8090 9090 9443
ENTRYPOINT ["kubepay"]
CMD ["--help"]
