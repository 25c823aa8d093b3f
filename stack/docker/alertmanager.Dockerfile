# labkit/alertmanager:<version> — Alertmanager for the docker backend where no registry is reachable.
# The shape of prom/alertmanager (ENTRYPOINT is the binary, so the backend passes only flags as the
# command), built from the offline base and the host's Debian prometheus-alertmanager and amtool (Go
# binaries linked only against glibc), which the build copies into bin/ of the context.
#
# Runtime contract:
#   command            Alertmanager flags (--config.file=..., --storage.path=..., --web.listen-address=...,
#                      --cluster.listen-address= to turn the gossip off)
#   LABKIT_HEALTH_URL  the URL the HEALTHCHECK fetches: http://127.0.0.1:<port>/-/ready. Unset: never healthy.
#   user 10001:10001, working directory and default storage /alertmanager.
# No configuration is built in: the lab mounts the alertmanager.yml it renders for each lab.

ARG BASE=labkit/base:bookworm

FROM ${BASE}
ARG LABKIT_VERSION=dev
LABEL org.opencontainers.image.title="labkit-alertmanager" \
      org.opencontainers.image.description="Alertmanager (Debian's build) for labkit's docker backend" \
      org.opencontainers.image.source="labkit" \
      org.opencontainers.image.version="${LABKIT_VERSION}"
RUN groupadd --gid 10001 labkit \
 && useradd --uid 10001 --gid 10001 --home-dir /alertmanager --no-create-home --shell /bin/sh labkit \
 && mkdir -p /alertmanager /etc/alertmanager \
 && chown 10001:10001 /alertmanager
COPY bin/alertmanager bin/amtool /usr/bin/
USER 10001:10001
WORKDIR /alertmanager
EXPOSE 9093
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os,urllib.request; urllib.request.urlopen(os.environ['LABKIT_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["/usr/bin/alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager", "--cluster.listen-address="]
