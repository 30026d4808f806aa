//! The metadata log's line format and its replay. Pure: bytes in, state out, so the start-up
//! path, the fuzz target and the mutation test all run the same code.
//!
//! # Line format
//!
//! ```text
//! <crc> <json>\n
//!   crc   8 lowercase hex digits: CRC32C (Castagnoli) of the <json> bytes
//!   ' '   one space
//!   json  one MetadataRecord, serde_json, no newline inside
//! ```
//!
//! Lines written before checksums existed start with `{` and hold only the JSON; they are still
//! read (a data directory written by an older release opens unchanged) but carry no checksum.
//!
//! # What replay accepts
//!
//! - The **last** line may be torn: no newline, a bad checksum, or not even well framed. That
//!   append was never acknowledged (records are fsynced before they are applied), so replay
//!   stops before it and reports it as [`Replay::torn`]; the store cuts it.
//! - Anything wrong **before** the last line is corruption of acknowledged history: replay
//!   fails with the line number rather than guess.
//! - A record with a good checksum that this version does not understand (an unknown `type`,
//!   i.e. written by a newer release) also fails replay, wherever it is. Skipping it would
//!   silently build a different cluster state than the writer had (a skipped "rename" or
//!   "reassign" changes everything after it); Kafka only skips unknown metadata records behind
//!   a `metadata.version` that says they are safe to ignore, which Sluice does not have yet.
//!   Unknown *fields* of known records are ignored by serde, which is how a record gains an
//!   optional field compatibly.
//! - A record that is understood but does not validate against the state so far fails replay.
//!
//! Nothing here panics or allocates by a number read from the input (tested with random and
//! mutated logs; fuzz target `metadata_log`).

use thiserror::Error;

use crate::record::MetadataRecord;
use crate::state::ClusterState;

/// The length of `<crc> ` before the JSON.
const PREFIX_LEN: usize = 9;

/// Encodes `record` as one checksummed line, newline included.
pub fn encode_line(record: &MetadataRecord) -> Result<Vec<u8>, serde_json::Error> {
    Ok(frame_line(&serde_json::to_vec(record)?))
}

/// Frames one JSON value (which must hold no raw newline; serde_json's compact output never
/// does) as a checksummed line, newline included. The Raft files ([`crate::quorum`]) use the
/// same line format for their entries, vote and snapshot.
pub(crate) fn frame_line(json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(PREFIX_LEN + json.len() + 1);
    line.extend_from_slice(format!("{:08x} ", crc32c::crc32c(json)).as_bytes());
    line.extend_from_slice(json);
    line.push(b'\n');
    line
}

/// The JSON of one checksummed line (without its newline), or why the line is not the bytes
/// that were written.
pub(crate) fn checked_json(line: &[u8]) -> Result<&[u8], String> {
    if line.len() < PREFIX_LEN || line[PREFIX_LEN - 1] != b' ' {
        return Err("no `<crc32c> ` prefix".into());
    }
    let stored = std::str::from_utf8(&line[..PREFIX_LEN - 1])
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| "checksum is not 8 hex digits".to_string())?;
    let json = &line[PREFIX_LEN..];
    let computed = crc32c::crc32c(json);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {computed:08x})"
        ));
    }
    Ok(json)
}

/// What a replay found.
#[derive(Debug)]
pub struct Replay {
    pub state: ClusterState,
    /// Length of the valid prefix; anything after it is a torn last record.
    pub valid_len: u64,
    /// Records applied.
    pub records: usize,
    /// Of those, lines in the old format without a checksum.
    pub unchecked_records: usize,
    /// The torn last record, if there was one.
    pub torn: Option<TornTail>,
}

/// A torn last record, dropped by replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// Why a replay failed: acknowledged history that cannot be read back.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct ReplayError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

/// Why one line could not be used.
enum LineError {
    /// Not the bytes that were written (checksum, framing): a torn write if it is the last line.
    Damaged(String),
    /// Intact but not understood, or not valid against the state: never a torn write.
    Refused(String),
}

/// Decodes one line (without its newline).
fn decode_line(line: &[u8]) -> Result<(MetadataRecord, bool), LineError> {
    if line.first() == Some(&b'{') {
        // Old format: the JSON is all there is, so a parse error may be a torn write.
        return match serde_json::from_slice::<MetadataRecord>(line) {
            Ok(r) => Ok((r, false)),
            Err(e) if is_unknown_type(&e) => Err(LineError::Refused(unknown_type(&e))),
            Err(e) => Err(LineError::Damaged(format!("unparsable record: {e}"))),
        };
    }
    let json = checked_json(line).map_err(LineError::Damaged)?;
    match serde_json::from_slice::<MetadataRecord>(json) {
        Ok(r) => Ok((r, true)),
        Err(e) if is_unknown_type(&e) => Err(LineError::Refused(unknown_type(&e))),
        Err(e) => Err(LineError::Refused(format!(
            "record has a valid checksum but cannot be decoded: {e}"
        ))),
    }
}

fn is_unknown_type(e: &serde_json::Error) -> bool {
    e.is_data() && e.to_string().starts_with("unknown variant")
}

fn unknown_type(e: &serde_json::Error) -> String {
    format!(
        "record type not known to this version of Sluice (written by a newer release?): {e}; \
         refusing to start rather than build a different cluster state"
    )
}

/// Replays a whole metadata log image.
pub fn replay_bytes(bytes: &[u8]) -> Result<Replay, ReplayError> {
    let mut replay = Replay {
        state: ClusterState::default(),
        valid_len: 0,
        records: 0,
        unchecked_records: 0,
        torn: None,
    };
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        line_no += 1;
        let rest = &bytes[pos..];
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], pos + i + 1),
            None => {
                // No newline: the append stopped part-way. Only possible at the very end.
                replay.torn = Some(TornTail {
                    line: line_no,
                    reason: "incomplete record (no newline)".into(),
                });
                break;
            }
        };
        let is_last = next == bytes.len();
        let decoded = decode_line(line).and_then(|(record, checked)| {
            let offset = replay.state.last_offset + 1;
            replay
                .state
                .replay(offset, &record)
                .map(|()| checked)
                .map_err(|e| LineError::Refused(format!("record does not apply: {e}")))
        });
        match decoded {
            Ok(checked) => {
                replay.records += 1;
                if !checked {
                    replay.unchecked_records += 1;
                }
                replay.valid_len = next as u64;
                pos = next;
            }
            Err(LineError::Damaged(reason)) if is_last => {
                replay.torn = Some(TornTail {
                    line: line_no,
                    reason,
                });
                break;
            }
            Err(LineError::Damaged(reason)) => {
                return Err(ReplayError {
                    line: line_no,
                    reason: format!("{reason}, and acknowledged records follow it"),
                })
            }
            Err(LineError::Refused(reason)) => {
                return Err(ReplayError {
                    line: line_no,
                    reason,
                })
            }
        }
    }
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TopicConfigs;
    use crate::BrokerId;
    use sluice_types::ProducerId;
    use uuid::Uuid;

    fn records() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                broker_id: BrokerId(1),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                incarnation_id: None,
                directory_id: None,
                fenced: false,
            },
            MetadataRecord::CreateTopic {
                name: "a".into(),
                topic_id: Uuid::from_u128(10),
                replicas: vec![vec![BrokerId(1)]; 2],
                configs: TopicConfigs::from([("retention.ms".into(), "1000".into())]),
            },
            MetadataRecord::AllocateProducerIds {
                broker_id: BrokerId(1),
                first_id: ProducerId(0),
                size: 1000,
            },
            MetadataRecord::SetTopicConfigs {
                topic_id: Uuid::from_u128(10),
                configs: TopicConfigs::new(),
            },
        ]
    }

    fn image() -> Vec<u8> {
        records()
            .iter()
            .flat_map(|r| encode_line(r).unwrap())
            .collect()
    }

    #[test]
    fn round_trip_and_line_layout() {
        let bytes = image();
        let line = encode_line(&records()[0]).unwrap();
        let json = serde_json::to_vec(&records()[0]).unwrap();
        assert_eq!(&line[9..line.len() - 1], &json[..]);
        assert_eq!(line[8], b' ');
        assert_eq!(
            u32::from_str_radix(std::str::from_utf8(&line[..8]).unwrap(), 16).unwrap(),
            crc32c::crc32c(&json)
        );
        let r = replay_bytes(&bytes).unwrap();
        assert_eq!(r.records, 4);
        assert_eq!(r.unchecked_records, 0);
        assert_eq!(r.valid_len, bytes.len() as u64);
        assert!(r.torn.is_none());
        assert_eq!(r.state.next_producer_id, ProducerId(1000));
        assert!(r.state.topic("a").unwrap().configs.is_empty());
    }

    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
        let bytes = image();
        let last_start = bytes.len() - encode_line(&records()[3]).unwrap().len();
        let mut bad = bytes.clone();
        bad[last_start + 20] ^= 0x01;
        let r = replay_bytes(&bad).unwrap();
        assert_eq!(r.valid_len, last_start as u64);
        assert_eq!(r.records, 3);
        let torn = r.torn.unwrap();
        assert_eq!(torn.line, 4);
        assert!(torn.reason.contains("checksum mismatch"), "{}", torn.reason);
        // The change never happened: the topic keeps its configs.
        assert_eq!(r.state.topic("a").unwrap().configs.len(), 1);
    }

    #[test]
    fn a_flipped_bit_before_the_last_record_fails() {
        let mut bad = image();
        let second = encode_line(&records()[0]).unwrap().len();
        bad[second + 30] ^= 0x04;
        let e = replay_bytes(&bad).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("checksum mismatch"), "{}", e.reason);
    }

    #[test]
    fn every_prefix_replays_to_the_records_it_holds_whole() {
        let bytes = image();
        let ends: Vec<usize> = records()
            .iter()
            .scan(0, |end, r| {
                *end += encode_line(r).unwrap().len();
                Some(*end)
            })
            .collect();
        for cut in 0..=bytes.len() {
            let r = replay_bytes(&bytes[..cut]).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(r.records, whole, "cut at {cut}");
            assert_eq!(
                r.valid_len as usize,
                ends[..whole].last().copied().unwrap_or(0)
            );
            assert_eq!(r.torn.is_some(), r.valid_len as usize != cut);
        }
    }

    #[test]
    fn unknown_record_types_refuse_start_up_even_when_last() {
        let json = br#"{"type":"rename_topic","topic_id":"00000000-0000-0000-0000-00000000000a","name":"b"}"#;
        let mut line = format!("{:08x} ", crc32c::crc32c(json)).into_bytes();
        line.extend_from_slice(json);
        line.push(b'\n');
        let mut bytes = image();
        bytes.extend_from_slice(&line);
        let e = replay_bytes(&bytes).unwrap_err();
        assert_eq!(e.line, 5);
        assert!(
            e.reason.contains("not known to this version"),
            "{}",
            e.reason
        );
        assert!(e.reason.contains("rename_topic"), "{}", e.reason);
        // Old format too.
        let mut legacy = image();
        legacy.extend_from_slice(json);
        legacy.push(b'\n');
        assert_eq!(replay_bytes(&legacy).unwrap_err().line, 5);
    }

    #[test]
    fn unknown_fields_of_known_records_are_ignored() {
        let json = br#"{"type":"delete_topic","topic_id":"00000000-0000-0000-0000-00000000000a","reason":"test"}"#;
        let mut bytes = image();
        bytes.extend_from_slice(format!("{:08x} ", crc32c::crc32c(json)).as_bytes());
        bytes.extend_from_slice(json);
        bytes.push(b'\n');
        let r = replay_bytes(&bytes).unwrap();
        assert!(r.state.topic("a").is_none());
    }

    #[test]
    fn records_that_do_not_apply_fail_with_their_line() {
        let mut bytes = image();
        bytes.extend_from_slice(&image()); // the same topic created twice
        let e = replay_bytes(&bytes).unwrap_err();
        assert_eq!(e.line, 6);
        assert!(e.reason.contains("already exists"), "{}", e.reason);
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Garbage, mutated and spliced logs: replay answers, never panics, and whatever it
    /// accepts is a prefix of the input it can replay again to the same result.
    #[test]
    fn random_and_mutated_logs_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let good = image();
        let legacy: Vec<u8> = records()
            .iter()
            .flat_map(|r| {
                let mut l = serde_json::to_vec(r).unwrap();
                l.push(b'\n');
                l
            })
            .collect();
        let alphabet = b"{}[]\":,0123456789abcdef \ntype_a-";
        for round in 0..20_000 {
            let buf: Vec<u8> = match round % 4 {
                0 => {
                    let len = (rng.next() % 300) as usize;
                    (0..len).map(|_| rng.next() as u8).collect()
                }
                1 => {
                    // Plausible-looking garbage: JSON and hex characters, newlines.
                    let len = (rng.next() % 300) as usize;
                    (0..len)
                        .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                        .collect()
                }
                _ => {
                    let mut b = if round % 4 == 2 {
                        good.clone()
                    } else {
                        legacy.clone()
                    };
                    for _ in 0..(rng.next() % 4) {
                        let i = (rng.next() as usize) % b.len();
                        b[i] = rng.next() as u8;
                    }
                    let cut = (rng.next() as usize) % (b.len() + 1);
                    b.truncate(cut);
                    b
                }
            };
            if let Ok(r) = replay_bytes(&buf) {
                assert!(r.valid_len as usize <= buf.len());
                let again = replay_bytes(&buf[..r.valid_len as usize]).unwrap();
                assert_eq!(again.records, r.records);
                assert!(again.torn.is_none());
            }
        }
    }
}
