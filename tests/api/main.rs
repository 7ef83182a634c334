//! Integration tests: the real app, in-process on port 0, against real PostgreSQL and a real
//! Kafka broker (see `scripts/dev-deps`). Each test has its own schema and topics.

mod auth;
mod cli;
mod compression;
mod consumer_steps;
mod crash;
mod dead_letters;
mod delete_worker;
mod errors;
mod fault_proxy;
mod faults;
mod health;
mod helpers;
mod logs;
mod metrics;
mod migrations;
mod openapi;
mod process;
mod producer;
mod raw_kafka;
mod real_producers;
mod record_encoding;
mod response_log;
mod rows;
mod shutdown;
mod soak;
mod stalled_partition;
mod test_broker;
mod upcreate_worker;
mod worker_control;
