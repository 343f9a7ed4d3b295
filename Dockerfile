# Herald: one image, every role (`herald run|serve|relay|worker <role>|migrate`, and the operator commands).
#
#   docker build -t herald .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=postgres://… herald            # all-in-one (`herald run`)
#   docker run --rm herald --help
#
# The final image is distroless (glibc, libgcc, CA certificates; no shell, no package manager) and runs as the
# distroless `nonroot` user (uid 65532). Health checks use the binary itself: `herald healthcheck`.

# The toolchain must be at least the newest `rust-version` in Cargo.lock. Bookworm, because the runtime image
# is Debian 12: a binary linked against a newer glibc would not start there.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys with its own configure script and make (no cmake, no OpenSSL:
# Herald's rdkafka has neither the cmake-build nor the ssl feature); the rust image already has gcc and make.
# zlib is built into the binary instead of linked from the system: the distroless image has no libz.so.
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never

# 1. Dependencies only, so that a change to Herald's own code does not rebuild them: the manifests, the lock
#    file, and empty sources for every workspace crate. Every workspace member must be listed here (the test
#    tests/deploy_files.rs checks that). Afterwards the placeholder crates (all named herald*) are forgotten, so
#    that the real sources are compiled in step 2 whatever their timestamps.
#    The fuzz crate's targets (fuzz/fuzz_targets) need no placeholders: `--bin herald` never builds them.
COPY Cargo.toml Cargo.lock ./
COPY domain/Cargo.toml domain/Cargo.toml
COPY commands/Cargo.toml commands/build.rs commands/
COPY projections/Cargo.toml projections/Cargo.toml
COPY api/Cargo.toml api/build.rs api/
COPY workers/Cargo.toml workers/Cargo.toml
COPY fuzz/Cargo.toml fuzz/Cargo.toml
RUN for crate in domain commands projections api workers fuzz; do \
        mkdir -p "$crate/src" && touch "$crate/src/lib.rs"; \
    done \
    && mkdir -p src && touch src/lib.rs && echo 'fn main() {}' > src/main.rs \
    && cargo build --release --locked --bin herald \
    && rm -rf target/release/.fingerprint/herald* target/release/deps/herald* target/release/deps/libherald* \
        target/release/build/herald* target/release/herald*

# 2. Herald itself.
COPY . .
RUN cargo build --release --locked --bin herald \
    && cp target/release/herald /usr/local/bin/herald \
    && /usr/local/bin/herald --version

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/herald /usr/local/bin/herald
USER nonroot:nonroot
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=5 CMD ["herald", "healthcheck"]
ENTRYPOINT ["herald"]
CMD ["run"]
