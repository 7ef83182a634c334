//! Kafka requests written by hand, for what no client library will do: write a batch no reader
//! can decode, and read a stored batch's attributes (its codec) as the broker keeps them.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

fn string(value: &str) -> Vec<u8> {
    let mut out = (value.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(value.as_bytes());
    out
}

/// Sends one request (`api_key`, `version`, `body`) and returns the response after its
/// correlation id.
async fn call(bootstrap: &str, api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.extend_from_slice(&api_key.to_be_bytes());
    request.extend_from_slice(&version.to_be_bytes());
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&string("rowsync-tests"));
    request.extend_from_slice(body);
    let mut socket = TcpStream::connect(bootstrap).await.unwrap();
    socket
        .write_all(&(request.len() as i32).to_be_bytes())
        .await
        .unwrap();
    socket.write_all(&request).await.unwrap();
    let length = socket.read_i32().await.unwrap();
    let mut response = vec![0; length as usize];
    socket.read_exact(&mut response).await.unwrap();
    assert_eq!(response[..4], 7i32.to_be_bytes(), "correlation id");
    response.split_off(4)
}

/// Writes one record batch to `partition` of `topic` with a raw Produce request (v3): the batch
/// says it is gzip-compressed but holds bytes no gzip reader accepts. Its CRC is right, so the
/// broker stores it as any client's batch; only reading it fails. Returns the batch's offset.
pub async fn produce_undecodable_batch(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let payload = b"\x00not gzip at all, as if corrupted on its way";
    // From attributes on: what the batch's CRC-32C covers.
    let mut covered = Vec::new();
    covered.extend_from_slice(&1i16.to_be_bytes()); // attributes: gzip
    covered.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    covered.extend_from_slice(&0i64.to_be_bytes()); // first timestamp
    covered.extend_from_slice(&0i64.to_be_bytes()); // max timestamp
    covered.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    covered.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    covered.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    covered.extend_from_slice(&1i32.to_be_bytes()); // records
    covered.extend_from_slice(payload);
    let mut after_length = Vec::new();
    after_length.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    after_length.push(2); // magic
    after_length.extend_from_slice(&crc32c::crc32c(&covered).to_be_bytes());
    after_length.extend_from_slice(&covered);
    let mut batch = 0i64.to_be_bytes().to_vec(); // base offset (the broker assigns it)
    batch.extend_from_slice(&(after_length.len() as i32).to_be_bytes());
    batch.extend_from_slice(&after_length);

    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
    body.extend_from_slice(&10_000i32.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&string(topic));
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(&batch);
    let response = call(bootstrap, 0, 3, &body).await;
    // topics (1), name, partitions (1), partition, error code, base offset
    let at = 4 + 2 + topic.len() + 4 + 4;
    let error = i16::from_be_bytes(response[at..at + 2].try_into().unwrap());
    assert_eq!(error, 0, "the broker refused the raw batch");
    i64::from_be_bytes(response[at + 2..at + 10].try_into().unwrap())
}

/// The codec (attributes & 7: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) of every record batch
/// stored in `partition` of `topic` from offset 0, read with a raw Fetch request (v4).
pub async fn batch_codecs(bootstrap: &str, topic: &str, partition: i32) -> Vec<i16> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&100i32.to_be_bytes()); // max wait
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(16i32 << 20).to_be_bytes()); // max bytes
    body.push(0); // read uncommitted
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&string(topic));
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
    body.extend_from_slice(&(16i32 << 20).to_be_bytes());
    let response = call(bootstrap, 1, 4, &body).await;
    // throttle, topics (1), name, partitions (1), partition, error, high watermark, last stable
    let mut at = 4 + 4 + 2 + topic.len() + 4 + 4;
    let error = i16::from_be_bytes(response[at..at + 2].try_into().unwrap());
    assert_eq!(error, 0, "the broker refused the raw fetch");
    at += 2 + 8 + 8;
    let aborted = i32::from_be_bytes(response[at..at + 4].try_into().unwrap());
    at += 4 + 16 * aborted.max(0) as usize;
    let size = i32::from_be_bytes(response[at..at + 4].try_into().unwrap()) as usize;
    at += 4;
    let records = &response[at..at + size];
    let mut codecs = Vec::new();
    let mut batch = 0;
    // base offset (8), length (4), then `length` bytes: leader epoch (4), magic (1), crc (4),
    // attributes (2), …
    while batch + 12 <= records.len() {
        let length =
            i32::from_be_bytes(records[batch + 8..batch + 12].try_into().unwrap()) as usize;
        if batch + 12 + length > records.len() {
            break; // a batch cut off by the size limit
        }
        let attributes = &records[batch + 12 + 9..batch + 12 + 11];
        codecs.push(i16::from_be_bytes(attributes.try_into().unwrap()) & 7);
        batch += 12 + length;
    }
    codecs
}
