# lambdo as a FROM scratch image: the static musl binary and Debian's CA bundle, nothing else.
#
#   docker build --build-arg VERSION="$(cat VERSION)" -t lambdo .      (or: buildah build ...)
#   docker run --rm -e LAMBDO_SQS_QUEUE_URL=... -e LAMBDO_FLY_TOKEN=... ... lambdo
# VERSION only sets the org.opencontainers.image.version label; the binary takes its version
# from the VERSION file.
#
# The builder stage runs ./build.sh exactly as on a developer's machine: it installs its Debian
# packages (musl-tools, make, dpkg-dev, ca-certificates, ...) and fetches the BearSSL and cJSON
# *source* packages with apt-get source, so it needs Debian's mirror, nothing else.
# tests/image.sh builds and runs this image without a Docker engine (buildah, offline base).

FROM debian:bookworm-slim AS build
WORKDIR /src
# .dockerignore keeps .git, .deps/, build/, node_modules/, tests/ and any local ./lambdo out.
COPY . .
# /out is the final image's whole filesystem: lambdo at /, the CA bundle where BearSSL-based
# lambdo looks by default (SSL_CERT_FILE overrides it). The full Debian bundle is kept: the
# Machines run against AWS and Fly endpoints whose CAs we do not choose.
RUN ./build.sh \
 && ./lambdo --version \
 && test -s /etc/ssl/certs/ca-certificates.crt \
 && mkdir -p /out/etc/ssl/certs \
 && install -m 0755 lambdo /out/lambdo \
 && install -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

FROM scratch
ARG VERSION=unknown
LABEL org.opencontainers.image.title="lambdo" \
      org.opencontainers.image.description="Long-polls Amazon SQS and runs each group of messages in a Fly.io Machine" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/ /
# nobody:nogroup by number: there is no /etc/passwd in the image.
USER 65534:65534
ENTRYPOINT ["/lambdo"]
