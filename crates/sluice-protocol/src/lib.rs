//! Kafka wire layer for Sluice. Pure: no tokio, no files.
//!
//! # Layout
//! - [`frame`]: the 4-byte size prefix and its limits, checked before anything is allocated.
//! - [`request`]: request header parsing and body decoding into `kafka-protocol` messages.
//! - [`response`]: response framing (size prefix, the right header version per API) into
//!   [`response::Frame`]s: chunks written in order.
//! - `fetch_response`: the Fetch body, encoded by hand around its record sets so they go out
//!   as the log read them, without a copy (byte-for-byte what `kafka-protocol` writes).
//! - [`versions`]: the one table of API versions Sluice implements; ApiVersions is built from it.
//! - [`batch`]: zero-copy views of RecordBatch v2 (header fields, CRC32C, offset rewrite).
//! - [`validate`]: the log validator: walks every record of a batch in place (streaming through
//!   the decompressor, bounded) and checks it against the header before anything is stored.
//! - [`records`]: decoding the records inside a batch, for the rare paths that need them.
//!
//! The message structs themselves come from the `kafka-protocol` crate (generated from Kafka's
//! JSON schemas); it is re-exported as [`kafka`] so every layer uses the same version.

pub mod batch;
mod fetch_response;
pub mod frame;
pub mod records;
pub mod request;
pub mod response;
pub mod validate;
pub mod versions;

pub use kafka_protocol as kafka;
