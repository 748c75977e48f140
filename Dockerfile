# Multi-stage build: compile with the Rust toolchain, ship only the binary on a slim base.
#   docker build -t permission-broker .
#   docker run -v /run/permission-broker:/run/permission-broker permission-broker
# Deno processes on the host (or in other containers sharing the volume) then use
#   DENO_PERMISSION_BROKER_PATH=/run/permission-broker/broker.sock
# To resolve relative paths and subject facts of processes outside the container, run it with
# --pid=host and --cap-add=SYS_PTRACE (see README, "Privileges").

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p permission-broker

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin broker \
    && mkdir -p /run/permission-broker /etc/permission-broker \
    && chown broker /run/permission-broker
COPY --from=build /src/target/release/permission-broker /usr/local/bin/permission-broker
COPY config/fleet/ /etc/permission-broker/
VOLUME ["/run/permission-broker"]
USER 10001
ENTRYPOINT ["/usr/local/bin/permission-broker"]
CMD ["serve", "--socket", "/run/permission-broker/broker.sock", "--socket-mode", "666", "--policy", "/etc/permission-broker", "--decision-log", "-"]
