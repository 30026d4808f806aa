//! ApiVersions: the client's first request. Built from the one version table in
//! `sluice_protocol::versions`. An unsupported ApiVersions version gets a v0 body with
//! UNSUPPORTED_VERSION and the same table (KIP-511), so the client can retry at a version we know.

use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::ResponseError;
use sluice_protocol::versions::SUPPORTED;

pub fn handle(error: Option<ResponseError>) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
}
