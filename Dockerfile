# syntax=docker/dockerfile:1
#
# docker build -t claimgate .
# docker run --rm -p 8080:8080 -v "$PWD/my.yaml:/etc/claimgate/claimgate.yaml:ro" claimgate

# ---------------------------------------------------------------- build
FROM rust:1-bookworm AS build
WORKDIR /src

# aws-lc-sys (under jsonwebtoken/aws-lc-rs) compiles its C with the cc crate and the image's gcc;
# neither cmake nor clang is needed for x86_64/aarch64 Linux.

# Dependency layer: build every dependency against stub sources, so that editing src/ does not
# rebuild them. Explicit [[bench]] targets must exist for Cargo.toml to load, so each gets a stub.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for b in $(awk '/^\[/ {inb = ($0 == "[[bench]]")} inb && /^name *=/ {gsub(/^name *= *"|".*$/, ""); print}' Cargo.toml); do \
           echo 'fn main() {}' > "benches/$b.rs"; \
       done \
    && cargo build --release --locked --bin claimgate \
    && rm -rf src

# The real build. Touch the sources so Cargo does not mistake them for the stubs it just built.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin claimgate \
    && cp target/release/claimgate /claimgate

# ---------------------------------------------------------------- run
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /claimgate /usr/local/bin/claimgate
COPY config/claimgate.yaml /etc/claimgate/claimgate.yaml
# Numeric, so the kubelet can verify runAsNonRoot (65532 is distroless "nonroot"); config/k8s/ uses it.
USER 65532:65532
# 8080: the proxy. 9901: /healthz, /readyz, /metrics (set admin.listen to 0.0.0.0:9901 to reach it).
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/claimgate"]
CMD ["--config", "/etc/claimgate/claimgate.yaml"]
