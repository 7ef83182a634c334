//! What a response becomes in the response log: one JSON record,
//! `{"url", "request_method", "status", "data"[, "truncated"][, "cut"]}`, built once its body is known and
//! handed to the queue (`kafka::response_log`).

use std::sync::Arc;

use crate::kafka::response_log::ResponseLogQueue;

/// Largest body carried as `data`; larger ones are logged with `data: null, truncated: true`
/// (Kafka refuses messages over 1 MB by default).
pub const MAX_DATA_BYTES: usize = 900 * 1024;

/// What the response log saw of a body.
pub(super) enum Captured<'a> {
    /// All of it.
    Whole(&'a [u8]),
    /// Not all of it: it was too large (the body was still sent whole).
    Truncated,
    /// Not all of it: the body was cut before its end (an error mid-stream, a client that
    /// stopped reading for `HTTP_SEND_TIMEOUT_MS`, or went away); the record says `"cut": true`.
    Cut,
}

/// A response whose record waits for its body.
pub(super) struct PendingRecord {
    pub(super) log: Arc<ResponseLogQueue>,
    pub(super) url: String,
    pub(super) method: poem::http::Method,
    pub(super) status: u16,
    /// Only a JSON body is copied into the record.
    pub(super) is_json: bool,
}

impl PendingRecord {
    /// Builds the record from what was seen of the body and queues it.
    pub(super) fn queue(self, body: Captured<'_>) {
        let (data, truncated, cut) = match body {
            Captured::Whole(bytes) if self.is_json && is_json_value(bytes) => {
                (Some(bytes), false, false)
            }
            Captured::Whole(_) => (None, false, false),
            Captured::Truncated => (None, self.is_json, false),
            Captured::Cut => (None, self.is_json, true),
        };
        self.log.enqueue(encode_record(
            &self.url,
            self.method.as_str(),
            self.status,
            data,
            truncated,
            cut,
        ));
    }
}

/// One response-log record, `{"url", "request_method", "status", "data"[, "truncated"][,
/// "cut"]}`, as JSON. `data` is copied in as it is: it must be one JSON value.
fn encode_record(
    url: &str,
    method: &str,
    status: u16,
    data: Option<&[u8]>,
    truncated: bool,
    cut: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + url.len() + data.map_or(0, <[u8]>::len));
    // Writing a string into a Vec cannot fail.
    out.extend_from_slice(b"{\"url\":");
    serde_json::to_writer(&mut out, url).expect("a string serialises");
    out.extend_from_slice(b",\"request_method\":");
    serde_json::to_writer(&mut out, method).expect("a string serialises");
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.unwrap_or(b"null"));
    if truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    if cut {
        out.extend_from_slice(b",\"cut\":true");
    }
    out.push(b'}');
    out
}

/// Whether a JSON-typed body can go into a record as it is. Bodies this API writes whole are
/// serialised objects or arrays; anything else is checked by parsing it.
fn is_json_value(body: &[u8]) -> bool {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'[') => true,
        Some(_) => serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_with_the_body_copied_in() {
        let record = encode_record(
            "/api/some_models/\"x\"",
            "GET",
            200,
            Some(br#"[{"id":5,"name":"smth"}]"#),
            false,
            false,
        );
        let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"url": "/api/some_models/\"x\"", "request_method": "GET",
                "status": 200, "data": [{"id": 5, "name": "smth"}]})
        );
        let truncated = encode_record("/api/x", "POST", 404, None, true, false);
        let value: serde_json::Value = serde_json::from_slice(&truncated).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"url": "/api/x", "request_method": "POST", "status": 404,
                "data": null, "truncated": true})
        );
        let cut = encode_record("/api/some_models/", "GET", 200, None, true, true);
        let value: serde_json::Value = serde_json::from_slice(&cut).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"url": "/api/some_models/", "request_method": "GET",
                "status": 200, "data": null, "truncated": true, "cut": true})
        );
    }

    #[test]
    fn only_json_values_are_copied_into_records() {
        assert!(is_json_value(b" {\"a\": 1}"));
        assert!(is_json_value(b"[]"));
        assert!(is_json_value(b"\"text\""));
        assert!(!is_json_value(b""));
        assert!(!is_json_value(b"not json"));
    }
}
