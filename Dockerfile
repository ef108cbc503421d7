# stigmer in a container: built with its payloads, run as a non-root user on
# a distroless base with a read-only root filesystem.
#
#   docker build -t stigmer . && docker run --read-only -p 7234:7234 stigmer
#
# Payloads run from sealed memfds: nothing needs to be writable. Only
# PyInstaller one-file payloads need STIGMER_HOME on a writable, exec-capable
# volume (deploy/pod.yaml mounts an emptyDir there). tests/container.rs runs
# stigmer under the same conditions with bubblewrap (docker cannot run on the
# project's machines); keep the two in step.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Real payloads go in platform/<target-triple>/ before this step (see
# platform/README.md); without them the demo services are embedded.
RUN .ci/release --out /dist --no-smoke \
 && mkdir /out \
 && tar -xzf /dist/stigmer-*.tar.gz -C /out --strip-components=1

# glibc and libgcc, no shell, no package manager; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/stigmer /usr/local/bin/stigmer
ENV STIGMER_HOME=/var/lib/stigmer
USER 65532:65532
EXPOSE 7234
ENTRYPOINT ["/usr/local/bin/stigmer"]
CMD ["server"]
