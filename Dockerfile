# Tollgate container image: build with the Rust toolchain, run on a slim Debian as a non-root user.
#   docker build -t tollgate .
#   docker run -p 8080:8080 -v $PWD/my.toml:/etc/tollgate/tollgate.toml:ro tollgate
# The shipped config only answers 404s until you mount your own.

# The builder image has perl, make and gcc, which the vendored OpenSSL build (Pingora's `openssl`
# feature) needs; OpenSSL is linked statically, so the runtime image needs no libssl.
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY examples ./examples
# A workspace member and dev-dependency: cargo reads its manifest even for the release binary.
COPY testkit ./testkit
RUN cargo build --release --locked --bin tollgate

# ca-certificates: the system roots that upstreams with `tls = true` and no `ca_file` are
# verified against.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tollgate \
 && mkdir -p /etc/tollgate
COPY --from=builder /src/target/release/tollgate /usr/local/bin/tollgate
COPY docker/tollgate.toml /etc/tollgate/tollgate.toml
USER tollgate
# 8080: traffic; 9901: admin (metrics, health). The admin listener binds 0.0.0.0 in the image's
# config so a container orchestrator can probe /healthz and /readyz; never publish it to the
# internet.
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["run", "-c", "/etc/tollgate/tollgate.toml"]
