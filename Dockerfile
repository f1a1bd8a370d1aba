# Multi-stage build. Dependencies are compiled in a layer of their own
# (cargo-chef), so a change to our code does not rebuild them. Queries compile
# against the committed .sqlx/ metadata: no database is needed to build.

FROM rust:1.95-slim-bookworm AS chef
WORKDIR /app
RUN cargo install cargo-chef --locked

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --bin newsletter

FROM debian:bookworm-slim AS runtime
WORKDIR /app
# CA certificates for TLS to the email API and the managed database.
RUN apt-get update -y \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get autoremove -y && apt-get clean -y && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home newsletter
COPY --from=builder /app/target/release/newsletter newsletter
COPY configuration configuration
USER newsletter
ENV APP_ENVIRONMENT=production
EXPOSE 8000
# `newsletter` serves; `newsletter migrate` applies pending migrations (a CMD,
# not an ENTRYPOINT, so a platform run command can replace it).
CMD ["./newsletter"]
