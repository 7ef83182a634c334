-- The offset of the record the fingerprint belongs to. It was always next_offset - 1; once a
-- worker moves past transaction markers and aborted transactions, the last applied record can
-- lie further back, and the fingerprint must say which one it is.
ALTER TABLE kafka_offsets ADD COLUMN fingerprint_offset bigint;
UPDATE kafka_offsets SET fingerprint_offset = next_offset - 1 WHERE last_fingerprint IS NOT NULL;
