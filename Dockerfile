# The taskiq-monitor image: the package with the [tracing] extra and the `taskiq-monitor` command.
# Used by the compose stack for the demo worker, the demo app and the exporter; in your own image, install
# `taskiq-monitor[tracing]` next to your application instead.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install ".[tracing]" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin taskiq

# Non-root from here on; the multiprocess metrics directory defaults to a temp dir this user can write.
USER 10001:10001
EXPOSE 9808 9809
CMD ["taskiq-monitor", "serve", "--host", "0.0.0.0", "--port", "9808"]
