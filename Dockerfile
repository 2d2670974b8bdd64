# Glucohub hub image. Multi-arch friendly: pure-Python wheels plus cryptography/pandas,
# which publish wheels for amd64 and arm64 (Raspberry Pi 4/5 with a 64-bit OS). With the
# PostgreSQL extra (psycopg's binary wheel, amd64 and arm64): one image for hub and clinic.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY glucohub ./glucohub
COPY gateway ./gateway
COPY device_adapters ./device_adapters
COPY ledger ./ledger
COPY dashboards ./dashboards
RUN python -m venv /opt/glucohub \
    && /opt/glucohub/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/glucohub/bin/pip install --no-cache-dir '.[postgresql]'

FROM python:3.11-slim-bookworm
# The fonts the PDF report embeds (dashboards/agppdf.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core fonts-droid-fallback \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin glucohub \
    && mkdir -p /data /etc/glucohub && chown glucohub:glucohub /data
COPY --from=build /opt/glucohub /opt/glucohub
COPY deploy/glucohub.example.toml /etc/glucohub/glucohub.toml
ENV PATH=/opt/glucohub/bin:$PATH \
    GLUCOHUB_STORAGE__DATA_DIR=/data \
    GLUCOHUB_DASHBOARD__HOST=0.0.0.0
USER glucohub
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["glucohub"]
CMD ["run", "--config", "/etc/glucohub/glucohub.toml"]
