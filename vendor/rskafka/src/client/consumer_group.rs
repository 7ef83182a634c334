//! Kafka's group membership protocol (the "classic" consumer group protocol).
//!
//! [`consumer_protocol`] encodes and decodes what consumers exchange through the group: their subscriptions and
//! assignments.

pub mod consumer_protocol;

pub use consumer_protocol::{Assignment, ConsumerProtocolError, Subscription};
