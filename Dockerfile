# Multi-stage build: compile with the Rust toolchain, ship only the binary on a slim base.
#
#   docker build -t permission-broker .
#   useradd --system --no-create-home --shell /usr/sbin/nologin permission-broker
#   install -d -o permission-broker -m 0755 /run/permission-broker
#   docker run -d --name permission-broker --pid=host --cap-drop=ALL --cap-add=SYS_PTRACE \
#     --user "$(id -u permission-broker):$(id -g permission-broker)" \
#     --security-opt seccomp=config/docker/seccomp.json \
#     -v /etc/permission-broker:/etc/permission-broker:ro \
#     -v /run/permission-broker:/run/permission-broker \
#     permission-broker
#   # Deno on the host: DENO_PERMISSION_BROKER_PATH=/run/permission-broker/broker.sock
#
# Every flag is required (README, "Docker"):
#   --pid=host              the kernel reports a peer's pid in the daemon's pid namespace: in the
#                           container's own, a Deno on the host has none, and every Deno 2.5.5 and
#                           later (which sends its pid) is refused. It is also where the daemon
#                           reads each peer's working directory, root and executable (/proc).
#   --cap-drop=ALL          no capability but the one it needs (Docker grants 14 by default).
#   --cap-add=SYS_PTRACE    reading another user's /proc/<pid>/{cwd,root,exe} takes CAP_SYS_PTRACE.
#                           The daemon runs as uid 10001, so the capability comes from the binary's
#                           file capability (set below); without the flag the kernel refuses to run
#                           it (`exec ... operation not permitted`), never a daemon that cannot see.
#   -v .../etc/permission-broker:ro  the policy. The image ships none: without it the daemon exits
#                           64 (`cannot read the policy`), never serving a policy nobody chose.
#   --user                  a system account of the host's own, which no person has: the socket's
#                           directory is that uid's, and whoever has the uid could replace the
#                           socket with one that allows everything. (The image's USER 10001 is
#                           only a default; a person's uid on many hosts.)
#   --security-opt seccomp  the unit's system-call filter: Docker's default profile lets a
#                           container with CAP_SYS_PTRACE call ptrace and process_vm_readv/writev,
#                           so a memory bug reached through the socket could reach any process.
#   -v /run/permission-broker  the socket's directory, owned by that account (`install -d`);
#                           root-owned, the bind fails with exit 69 and a message saying so.
# AppArmor hosts (Ubuntu): Docker's docker-default profile lets a container read the /proc links
# of processes under that profile only; a host Deno's working directory is then unreadable and
# relative or linked paths are denied (fail closed). Not tested here (no AppArmor on the test
# machine): load a profile that also allows `ptrace (read) peer=unconfined`.
# Do not add --security-opt no-new-privileges: it stops the file capability from applying.
# With `--decision-log -` stdout carries only the decision log's JSON lines (the ready line and
# every other message go to stderr), for `docker logs` or a log driver to ship.

# Base images are pinned by their index digest (as of 2026-08): bump both with
# `docker buildx imagetools inspect rust:1.95-slim-bookworm` / `debian:bookworm-slim`.
FROM rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082 AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p permission-broker

FROM debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818
COPY --from=build /src/target/release/permission-broker /usr/local/bin/permission-broker
# The file capability is set in this stage (a COPY does not carry extended attributes), and the
# tool that sets it is removed again.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin=1:2.66-4+deb12u* \
    && setcap cap_sys_ptrace+ep /usr/local/bin/permission-broker \
    && apt-get purge -y --auto-remove libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin broker \
    && mkdir -p /run/permission-broker \
    && chown broker /run/permission-broker
VOLUME ["/run/permission-broker"]
USER 10001
# Healthy while the daemon answers (allow or deny); a fault or no answer is unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["/usr/local/bin/permission-broker", "ask", "--any-answer", "--socket", "/run/permission-broker/broker.sock", "sys", "hostname"]
ENTRYPOINT ["/usr/local/bin/permission-broker"]
CMD ["serve", "--socket", "/run/permission-broker/broker.sock", "--socket-mode", "666", "--policy", "/etc/permission-broker", "--reload", "signal", "--decision-log", "-"]
