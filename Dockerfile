# The pilotwatch services (ingest, api, analytics) for docker-compose.yml. One image, one command per service.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY pilotwatch ./pilotwatch
COPY edge ./edge
COPY ingest ./ingest
COPY analytics ./analytics
COPY api ./api
COPY dashboards ./dashboards
COPY firmware_sim ./firmware_sim
RUN pip install . && rm -rf /src

# An unprivileged user owns the state folder (ingest spool and ledger, API keys, analytics checkpoints).
RUN useradd --system --uid 10001 --home-dir /var/lib/pilotwatch --create-home pilotwatch
USER pilotwatch
WORKDIR /var/lib/pilotwatch
ENV PILOTWATCH_HOME=/var/lib/pilotwatch

CMD ["pilotwatch", "--help"]
