//! rowsync keeps PostgreSQL table `some_model` in step with Kafka topics, steered by a typed REST
//! API (poem-openapi). It is the Rust successor of a small Django service and keeps its contract.
//!
//! # Layout
//! - [`app`] — assembles everything, serves, shuts down in order.
//! - [`cli`], [`config`] — command line and settings (environment / `.env`).
//! - [`telemetry`] — logging (text or JSON lines); [`shutdown`] — the signals that stop it.
//! - [`healthcheck`] — `rowsync healthcheck`, a dependency-free probe of `/health/live`.
//! - [`db`] — pool, TLS (`tls`), migrations (`sql/`), the hand-written SQL for rows and stored
//!   offsets, what PostgreSQL's errors mean (`errors`), the shared single-row reads of
//!   `write_to_kafka`, and the listener that hears every committed change to the table.
//! - [`kafka`] — the rskafka client and its TLS and SASL (`security`), topic creation, the
//!   Java-compatible partitioner, the message codec.
//! - [`workers`] — the registry starts and stops workers; each worker's supervisor owns one loop
//!   per partition, which fetches (`fetch`), finds where to resume (`resume`) and applies a batch
//!   in one transaction (`commit`, `batch`); what differs between upcreate and delete is one
//!   `Change` per kind (`upcreate`, `delete`).
//! - [`http`] — the OpenAPI endpoints, the streamed and cached listing, JSON errors and the
//!   response-log middleware.
//! - [`metrics`] — the Prometheus registry behind `GET /metrics`.
//! - [`model`], [`error`] — the row type and the library's error type.

pub mod app;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod shutdown;
pub mod telemetry;
pub mod workers;
