# syntax=docker/dockerfile:1
# Static alertfan (the SQLite driver is pure Go, so CGO is off) on a
# distroless base, running as non-root with its store on the /data volume.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
ARG BUILD_DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath -o /out/alertfan \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=main \
        -X github.com/prometheus/common/version.BuildUser=docker \
        -X github.com/prometheus/common/version.BuildDate=${BUILD_DATE}" \
      ./cmd/alertfan \
 && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/alertfan-demo-targets ./cmd/alertfan-demo-targets \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/alertfan /out/alertfan-demo-targets /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
# The example config and its demo secrets, so the image starts as it is
# (in demo mode); mount your own config and secrets over them.
COPY config.example.yml /etc/alertfan/config.yml
COPY deploy/secrets /etc/alertfan/deploy/secrets
USER 65532:65532
# data/alertfan.db in the config resolves against the working directory.
WORKDIR /
VOLUME ["/data"]
EXPOSE 9095
# The health check and `alertfan queue` read these. Behind a web config
# (--web.config.file with TLS and/or basic_auth_users) set
# ALERTFAN_URL=https://127.0.0.1:9095 and ALERTFAN_HTTP_CONFIG_FILE to an
# HTTP client config with the credentials and CA (README, "Deploy").
ENV ALERTFAN_URL=http://127.0.0.1:9095
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["/usr/local/bin/alertfan", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/alertfan"]
CMD ["--config.file=/etc/alertfan/config.yml"]
