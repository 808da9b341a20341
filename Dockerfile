# syntax=docker/dockerfile:1
# The plugin image, built from source: a Rust stage builds the fully static binary
# (scripts/build-static), the final stage is `FROM scratch` with only that binary and a CA
# bundle. Multi-arch with BuildKit (the build stage cross-compiles on the builder's own
# architecture, no emulation):
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE --push .
#
# Machines without a registry (no base image can be pulled) build the same final stage from
# a host-built binary with Dockerfile.local (scripts/build-image). See docs/image.md.
#
# The binary is built with `cargo auditable` (scripts/build-static), so it carries its
# dependency list; BuildKit's `--sbom=true` scanner reads it. The CycloneDX SBOM that
# scripts/sbom writes for the binary (with licenses) is the `sbom` stage:
#
#   docker buildx build --platform linux/amd64,linux/arm64 --target sbom --output type=local,dest=dist .
#
# RUST_IMAGE pins the build stage; scripts/rebuild-and-compare passes the digest the
# published image's provenance records, so a rebuild uses the very same toolchain.

ARG RUST_IMAGE=rust:1.95-bookworm

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
ARG TARGETARCH
ARG BUILDARCH
# A cross C toolchain (ring has C and assembly) and the target's static glibc, only when
# the target differs from the builder; python3 for scripts/sbom if the image lacks it.
# Versions follow the pinned Debian release; $pkgs is a word list on purpose.
# hadolint ignore=DL3008,SC2086
RUN set -eu; \
    pkgs=""; \
    command -v python3 >/dev/null || pkgs="python3"; \
    if [ "$TARGETARCH" != "$BUILDARCH" ]; then \
      case "$TARGETARCH" in \
        arm64) pkgs="$pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
        amd64) pkgs="$pkgs gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
        *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
      esac; \
    fi; \
    if [ -n "$pkgs" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $pkgs; \
      rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,id=target-$TARGETARCH,sharing=locked \
    --mount=type=cache,target=/src/.cache/cargo-tools,sharing=locked \
    set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    bin="$(scripts/build-static --target "$triple")"; \
    mkdir -p /out; \
    cp "$bin" /out/plugin-azure-storage; \
    cp "$bin.cdx.json" /out/plugin-azure-storage.cdx.json

# The SBOM of the binary, as a build output (not in the image): see the header.
FROM scratch AS sbom
COPY --from=build /out/plugin-azure-storage.cdx.json /plugin-azure-storage.cdx.json

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/OWNER/plugin-azure-storage
LABEL org.opencontainers.image.title="plugin-azure-storage" \
      org.opencontainers.image.description="CI plugin that moves build artifacts between the workspace and Azure Blob Storage or Azure Files, keyless, with verified parallel transfers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/plugin-azure-storage /bin/plugin-azure-storage
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Runs as root on purpose: CI workspaces are created by a clone step running as root, and a
# download must be able to write there. Nothing else is in the image. `--user` works for
# uploads and for workspaces the user can write.
ENTRYPOINT ["/bin/plugin-azure-storage"]
