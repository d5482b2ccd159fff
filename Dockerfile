# Assay in a small image: built with the same command CI runs, run as a
# non-root user from Debian's slim image.
#
#   docker build -t assay .
#   docker run -p 8080:8080 -e ASSAY_STRIPE_WEBHOOK_SECRET=whsec_... assay

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# The same build step as CI's (.ci/run), so what CI checked is what ships.
RUN cargo build --release --locked --bin assay

FROM debian:bookworm-slim
# CA roots for probes, alerts and OTLP over HTTPS; curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/assay --create-home assay
COPY --from=build /src/target/release/assay /usr/local/bin/assay
USER 10001
WORKDIR /var/lib/assay
# Listen on every interface inside the container; SQLite in the volume by
# default (set ASSAY_DATABASE_URL to postgres://... for replicas).
ENV ASSAY_BIND=0.0.0.0:8080 \
    ASSAY_DATABASE_URL=sqlite:///var/lib/assay/assay.db \
    ASSAY_LOG_FORMAT=json
VOLUME ["/var/lib/assay"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# SIGTERM stops accepting, finishes requests and deliveries in flight.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/assay"]
CMD ["serve"]
