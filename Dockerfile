# sensornet node image: one `node daemon` per container, configured by SENSORNET_* variables.
# Build: docker build -t sensornet .   Run: docker run -p 4001:4001 -p 4001:4001/udp -p 9401:9401 sensornet

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The same release build scripts/build-release.sh runs everywhere else.
RUN scripts/build-release.sh \
    && mkdir -p /out/data \
    && cp target/release/node target/release/sensornet target/release/sensor /out/

# distroless/cc: glibc and libgcc only, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/node /out/sensornet /out/sensor /usr/local/bin/
COPY --from=build --chown=10001:10001 /out/data /data
USER 10001:10001
ENV SENSORNET_PATH=/data \
    SENSORNET_INIT=true \
    SENSORNET_API_ADDR=127.0.0.1:5001 \
    SENSORNET_METRICS_ADDR=0.0.0.0:9401 \
    SENSORNET_MQTT_ADDR=127.0.0.1:1883 \
    SENSORNET_LISTEN=/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1 \
    SENSORNET_LOG_FORMAT=json
# Swarm (TCP and QUIC), API and MQTT (loopback unless a token is set), metrics and health.
EXPOSE 4001/tcp 4001/udp 5001/tcp 1883/tcp 9401/tcp
VOLUME ["/data"]
ENTRYPOINT ["node"]
CMD ["daemon"]
