# pipectl as a container image (see docs/docker.md). Multi-stage: the official Swift image
# builds an optimised, statically linked Swift binary; a slim Debian image runs it.
# Not built on the project's CI machine (it has no Docker engine): checked for structure only.

# --- build ---------------------------------------------------------------------------------
FROM swift:6.3.1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka-dev libpq-dev pkg-config python3-pip \
 && rm -rf /var/lib/apt/lists/*
# Debian bookworm's librdkafka (2.0.2) mis-reads tagged fields and pipectl refuses anything
# older than 2.3; the confluent-kafka wheel carries librdkafka 2.16 with its own dependencies.
RUN python3 -m pip install --break-system-packages --no-cache-dir --target /opt/rdkafka-wheel confluent-kafka==2.16.1 \
 && mkdir -p /opt/pipectl/lib \
 && cp /opt/rdkafka-wheel/confluent_kafka.libs/* /opt/pipectl/lib/ \
 && ln -sf "$(ls /opt/pipectl/lib/librdkafka-*.so.1 | head -n 1)" /opt/pipectl/lib/librdkafka.so.1
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product pipectl \
 && cp "$(swift build -c release --show-bin-path)/pipectl" /opt/pipectl/pipectl

# --- run -----------------------------------------------------------------------------------
FROM debian:bookworm-20251117-slim AS run
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /work --create-home pipectl
COPY --from=build /opt/pipectl /opt/pipectl
ENV LD_LIBRARY_PATH=/opt/pipectl/lib PATH=/opt/pipectl:$PATH
WORKDIR /work
COPY --chown=pipectl pipelines ./pipelines
COPY --chown=pipectl schemas ./schemas
COPY --chown=pipectl data ./data
USER pipectl
EXPOSE 9464
ENTRYPOINT ["pipectl"]
CMD ["--help"]
