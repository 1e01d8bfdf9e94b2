# CityPass: one image for every service and for the one-shot tools (migrate, topics, seed).
#   docker build -t citypass:local .
#   docker run -e CITYPASS_SERVICE=payments -p 8004:8004 citypass:local
# Health checks live in docker-compose.yml (or the orchestrator), not here.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# The rider web app (ticketing serves it at /app/): Debian's Node.js fetches the pinned QR
# encoder and build.js copies it with the sources into dist/, no bundler. Only dist/ is kept.
FROM ${PYTHON_IMAGE} AS rider-app
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /webapp
COPY services/ticketing/webapp/package.json services/ticketing/webapp/build.js ./
COPY services/ticketing/webapp/src ./src
RUN npm install --no-package-lock --no-audit --no-fund --loglevel=error \
    && npm run --silent build

FROM ${PYTHON_IMAGE}

# PYTHONPATH: every entry point (python -m services.<name>, the citypass console script) imports
# the same tree, /app, which holds exactly the source that was installed.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 citypass \
    && useradd --system --uid 10001 --gid citypass --create-home --home-dir /home/citypass \
        --shell /usr/sbin/nologin citypass

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
# All pinned requirements ship manylinux wheels, so no compiler is needed.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# Then the project. /app/var is the only writable place; no service keeps state in it (validation's
# events wait in Redis streams, the others' in PostgreSQL outboxes).
COPY infra/docker/start-service.sh /usr/local/bin/citypass-service
COPY . .
COPY --from=rider-app /webapp/dist services/ticketing/webapp/dist
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q -j 0 citypass services shared \
    && chmod 0755 /usr/local/bin/citypass-service \
    && install -d -o citypass -g citypass -m 0750 /app/var

# Numeric, so that orchestrators can verify runAsNonRoot.
USER 10001:10001

# ticketing, validation, parking, payments, operator
EXPOSE 8001 8002 8003 8004 8080

CMD ["citypass-service"]
