# predictstore: gRPC on 0.0.0.0:50051. Point PREDICTSTORE_DATABASE_URL at PostgreSQL or
# TimescaleDB (see docker-compose.yml); without it the service runs an embedded
# PostgreSQL in /data. Listening beyond loopback needs API keys (PREDICTSTORE_API_KEYS)
# or mTLS, or an explicit PREDICTSTORE_ALLOW_INSECURE=true: the server refuses otherwise.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin predictstore \
    && mkdir /data && chown predictstore:predictstore /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY generated ./generated
COPY migrations ./migrations
COPY src ./src
RUN pip install . && rm -rf /app/build

USER predictstore
ENV PREDICTSTORE_LISTEN=0.0.0.0:50051 \
    PREDICTSTORE_DATA_DIR=/data
EXPOSE 50051
VOLUME ["/data"]

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=4); sys.exit(r.status != h.HealthCheckResponse.SERVING)"]

ENTRYPOINT ["predictstore"]
CMD ["serve"]
