#!/bin/sh
# The image's default command: serve the one service named by CITYPASS_SERVICE.
# `exec` makes the service PID 1, so `docker stop` (SIGTERM) reaches uvicorn directly.
set -eu

usage() {
    cat >&2 <<'EOF'
CityPass image: one image, every service and tool.

  docker run -e CITYPASS_SERVICE=<name> citypass:local      serve one service
      <name>: ticketing (8001) | validation (8002) | parking (8003) | payments (8004) | operator (8080)
  docker run citypass:local python -m services.<name>       the same, explicitly
  docker run citypass:local citypass stack migrate          Alembic migrations (CITYPASS_DATABASE_URL)
  docker run citypass:local citypass stack topics           Kafka topics (CITYPASS_KAFKA_BOOTSTRAP_SERVERS)
  docker run citypass:local citypass stack seed             demo data

Configuration is read from <PREFIX>_* environment variables (see docker-compose.yml).
EOF
}

case "${CITYPASS_SERVICE:-}" in
    ticketing | validation | parking | payments | operator)
        exec python -m "services.${CITYPASS_SERVICE}"
        ;;
    "")
        usage
        exit 64
        ;;
    *)
        echo "unknown CITYPASS_SERVICE '${CITYPASS_SERVICE}'" >&2
        usage
        exit 64
        ;;
esac
