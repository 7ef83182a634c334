//! Turns Kafka record values into what the workers apply, and rows into record values.
//! A value that is not a valid message yields an [`InvalidMessage`] saying why; it never panics.

use serde::Deserialize;

use crate::model::{Row, NAME_MAX_CHARS};

/// Why a record value is not a valid message; the worker logs it, counts it and moves on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidMessage(pub String);

/// An upsert message, `{"id": 5, "name": "smth"}` (other fields are ignored).
#[derive(Deserialize)]
struct UpsertMessage {
    id: i64,
    name: String,
}

/// A delete message, `{"id": 1}` (other fields are ignored).
#[derive(Deserialize)]
struct DeleteMessage {
    id: i64,
}

/// Decodes an upsert message into the row it names.
pub fn decode_upsert(value: Option<&[u8]>) -> Result<Row, InvalidMessage> {
    let message: UpsertMessage = decode(value)?;
    let chars = message.name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(InvalidMessage(format!(
            "name has {chars} characters, more than {NAME_MAX_CHARS}"
        )));
    }
    if message.name.contains('\0') {
        // PostgreSQL text cannot hold NUL; letting it through would fail the whole batch.
        return Err(InvalidMessage("name contains a NUL character".to_owned()));
    }
    Ok(Row {
        id: message.id,
        name: message.name,
    })
}

/// Decodes a delete message into the id it names.
pub fn decode_delete(value: Option<&[u8]>) -> Result<i64, InvalidMessage> {
    decode::<DeleteMessage>(value).map(|m| m.id)
}

/// The record value for a row: `{"id": 5, "name": "smth"}`.
pub fn encode_row(row: &Row) -> Vec<u8> {
    // Serialising a struct of an integer and a string cannot fail.
    serde_json::to_vec(row).expect("a row serialises to JSON")
}

fn decode<'a, T: Deserialize<'a>>(value: Option<&'a [u8]>) -> Result<T, InvalidMessage> {
    let value = value.ok_or_else(|| InvalidMessage("record has no value".to_owned()))?;
    serde_json::from_slice(value).map_err(|e| InvalidMessage(format!("not a valid message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_upsert_message_becomes_a_row() {
        let row = decode_upsert(Some(br#"{"id": 5, "name": "smth", "extra": true}"#)).unwrap();
        assert_eq!(
            row,
            Row {
                id: 5,
                name: "smth".into()
            }
        );
    }

    #[test]
    fn invalid_upsert_messages_say_why() {
        let long = format!(r#"{{"id": 1, "name": "{}"}}"#, "я".repeat(201));
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "not a valid message"),
            (br#"{"name": "x"}"#, "missing field `id`"),
            (br#"{"id": 1}"#, "missing field `name`"),
            (br#"{"id": "1", "name": "x"}"#, "invalid type"),
            (br#"{"id": 1.5, "name": "x"}"#, "invalid type"),
            (br#"{"id": 9223372036854775808, "name": "x"}"#, "invalid"),
            (br#"{"id": 1, "name": null}"#, "invalid type"),
            (long.as_bytes(), "201 characters"),
            (br#"{"id": 1, "name": "a\u0000b"}"#, "NUL"),
        ];
        for (value, reason) in cases {
            let error = decode_upsert(Some(value)).unwrap_err();
            assert!(
                error.0.contains(reason),
                "{}: {error}",
                String::from_utf8_lossy(value)
            );
        }
        assert!(decode_upsert(None).is_err());
    }

    #[test]
    fn a_name_of_exactly_200_characters_is_valid() {
        let value = format!(r#"{{"id": 1, "name": "{}"}}"#, "я".repeat(200));
        assert!(decode_upsert(Some(value.as_bytes())).is_ok());
    }

    #[test]
    fn delete_messages_name_an_int64_id() {
        assert_eq!(decode_delete(Some(br#"{"id": -3}"#)), Ok(-3));
        assert!(decode_delete(Some(br#"{"id": "3"}"#)).is_err());
        assert!(decode_delete(Some(b"[]")).is_err());
    }

    #[test]
    fn rows_encode_as_the_django_service_wrote_them() {
        let value = encode_row(&Row {
            id: 5,
            name: "smth".into(),
        });
        assert_eq!(value, br#"{"id":5,"name":"smth"}"#);
    }
}
