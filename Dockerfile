# predictstore: gRPC on 0.0.0.0:50051. Point PREDICTSTORE_DATABASE_URL at PostgreSQL or
# TimescaleDB (see docker-compose.yml); without it the service runs an embedded
# PostgreSQL in /data. Listening beyond loopback needs API keys (PREDICTSTORE_API_KEYS)
# or mTLS, or an explicit PREDICTSTORE_ALLOW_INSECURE=true: the server refuses otherwise
# (exit 2), so a bare `docker run IMAGE` stops at once by design. Run it as
#   docker run -e PREDICTSTORE_API_KEYS='[...]' -p 50051:50051 IMAGE   (keys: `predictstore keys create`)
# or, for a try on this machine only,
#   docker run -e PREDICTSTORE_ALLOW_INSECURE=true -p 127.0.0.1:50051:50051 IMAGE
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin predictstore \
    && mkdir /data && chown predictstore:predictstore /data

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY generated ./generated
COPY migrations ./migrations
COPY src ./src
RUN pip install -c constraints.txt . && rm -rf /app/build

USER predictstore
ENV PREDICTSTORE_LISTEN=0.0.0.0:50051 \
    PREDICTSTORE_DATA_DIR=/data
EXPOSE 50051
VOLUME ["/data"]

# `predictstore health` dials what PREDICTSTORE_LISTEN says (a wildcard host over loopback)
# with TLS when PREDICTSTORE_TLS_CERT_FILE is set, trusting that certificate; a certificate
# for another name needs --server-name, mTLS --client-cert/--client-key (override the
# HEALTHCHECK, e.g. in compose).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["predictstore", "health", "--timeout", "4"]

ENTRYPOINT ["predictstore"]
CMD ["serve"]
