# labkit/prometheus:<version> — Prometheus for the docker backend where no registry is reachable.
# Real users run prom/prometheus; this image has the same shape (ENTRYPOINT is the binary, so the backend
# passes only flags as the command), built from the offline base and the host's Debian prometheus and
# promtool (Go binaries linked only against glibc), which the build copies into bin/ of the context.
#
# Runtime contract:
#   command            Prometheus flags (--config.file=..., --storage.tsdb.path=..., --web.listen-address=...)
#   LABKIT_HEALTH_URL  the URL the HEALTHCHECK fetches: http://127.0.0.1:<port>/-/ready. Unset: never healthy.
#   user 10001:10001, working directory and default TSDB /prometheus.
# The health check uses the base's python3: prometheus has no client of its own and minbase has no curl.

ARG BASE=labkit/base:bookworm

FROM ${BASE}
ARG LABKIT_VERSION=dev
LABEL org.opencontainers.image.title="labkit-prometheus" \
      org.opencontainers.image.description="Prometheus (Debian's build) for labkit's docker backend" \
      org.opencontainers.image.source="labkit" \
      org.opencontainers.image.version="${LABKIT_VERSION}"
RUN groupadd --gid 10001 labkit \
 && useradd --uid 10001 --gid 10001 --home-dir /prometheus --no-create-home --shell /bin/sh labkit \
 && mkdir -p /prometheus /etc/prometheus \
 && chown 10001:10001 /prometheus
COPY bin/prometheus bin/promtool /usr/bin/
COPY prometheus.yml /etc/prometheus/prometheus.yml
USER 10001:10001
WORKDIR /prometheus
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os,urllib.request; urllib.request.urlopen(os.environ['LABKIT_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
