//! rowsync keeps PostgreSQL table `some_model` in step with Kafka topics, steered by a typed REST
//! API (poem-openapi). It is the Rust successor of a small Django service and keeps its contract.
//!
//! # Layout
//! - [`app`] — assembles everything, serves, shuts down in order; owns every background task it
//!   starts (its own on one `TaskTracker`, awaited at shutdown).
//! - [`cli`], [`config`] — command line and settings (environment / `.env`), one file per group
//!   (`database`, with libpq's TLS parameters in `database_tls`; `kafka`; `topics`, which also
//!   names each worker's topics; `auth`; `listing`, the limits of streamed listings); `secrets`
//!   reads the `*_FILE` variables.
//! - [`telemetry`] — logging (text or JSON lines); [`shutdown`] — the signals that stop it;
//!   [`allocator`] — jemalloc's options; returns its free memory to the OS once the process is idle.
//! - [`healthcheck`] — `rowsync healthcheck`, a dependency-free probe of `/health/live`.
//! - [`db`] — pool (and its metrics, `pool_metrics`), TLS (`tls`), migrations (`sql/`), the
//!   hand-written SQL for rows and stored offsets, what PostgreSQL's errors mean (`errors`:
//!   SQLSTATE classes, and a failed connection as one line naming the setting), the shared
//!   single-row reads of `write_to_kafka` (`row_reads`), and the listener that hears every
//!   committed change to the table (`changes`).
//! - [`kafka`] — the rskafka client and its TLS and SASL (`security`; rustls's configuration,
//!   `tls`), topic creation, the Java-compatible partitioner, the message codec; the producer
//!   (`producer`, which owns a task per partition), and the response log's bounded queue and
//!   batching publisher (`response_log`).
//! - [`workers`] — the registry starts and stops workers and resets their offsets; each worker's
//!   supervisor owns one loop per partition, which fetches (`fetch`), finds where to resume
//!   (`resume`) and applies a batch in one transaction (`commit`, `batch`); what differs between
//!   upcreate and delete is one `Change` per kind (`upcreate`, `delete`); what the workers export
//!   to Prometheus (`metrics`).
//! - [`http`] — the OpenAPI endpoints (`rows_api`; `workers_api`, every worker endpoint, starting
//!   and stopping included; `health_api`; `metrics_api`), request metrics (`request_metrics`),
//!   the streamed and cached listing, JSON errors and the response-log middleware
//!   (`response_log`: the record a response becomes, `record`; the tee that copies a streamed
//!   body, `tee`).
//! - [`metrics`] — the Prometheus registry behind `GET /metrics`; each part registers its own
//!   metrics with it at assembly, so it imports nothing from the crate.
//! - [`model`] — the row type and the worker kinds; [`error`] — the library's error type, and
//!   what Kafka's errors mean (`kafka`).
//!
//! Imports point down, never back: `app` → `http` → `workers` → `db`, `kafka` → `config` →
//! `error`, `model`; `cli` → `config`; `metrics`, `allocator`, `healthcheck`, `shutdown` and
//! `telemetry` import nothing from the crate.

pub mod allocator;
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
