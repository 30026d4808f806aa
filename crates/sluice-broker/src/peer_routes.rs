//! Where this process dials another node.
//!
//! Normally a peer is dialed at the address it advertises: its controller address (Raft,
//! registration, heartbeats, forwarded operations) or its client listener (replica fetches).
//! A fault-injection harness needs one link per ordered pair of nodes that it can cut on its
//! own, so `serve --peer-route ADDR=VIA` (hidden, repeatable, for tests) makes this process dial
//! `VIA` wherever it would have dialed `ADDR`. Every address a peer is known by keeps its
//! meaning in metadata; only the dialing changes.

use std::collections::BTreeMap;

use crate::config::ConfigError;

/// Dial overrides, by the address they replace. Empty in normal operation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRoutes {
    via: BTreeMap<String, String>,
}

impl PeerRoutes {
    /// Parses `ADDR=VIA` entries, each `HOST:PORT=HOST:PORT`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<PeerRoutes, ConfigError> {
        let mut via = BTreeMap::new();
        for entry in entries {
            let entry = entry.as_ref();
            let bad = |reason: &str| ConfigError::Invalid {
                key: "peer-route".into(),
                value: entry.into(),
                reason: reason.into(),
            };
            let (from, to) = entry
                .split_once('=')
                .ok_or_else(|| bad("expected HOST:PORT=HOST:PORT"))?;
            let (from, to) = (from.trim(), to.trim());
            for addr in [from, to] {
                crate::config::parse_host_port(addr)
                    .ok_or_else(|| bad("expected HOST:PORT=HOST:PORT"))?;
            }
            if via.insert(from.to_string(), to.to_string()).is_some() {
                return Err(bad("this address is routed twice"));
            }
        }
        Ok(PeerRoutes { via })
    }

    /// The address to dial for a peer known as `addr`.
    pub fn resolve(&self, addr: &str) -> String {
        self.via
            .get(addr)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    pub fn is_empty(&self) -> bool {
        self.via.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_replace_only_the_addresses_they_name() {
        let r =
            PeerRoutes::parse(&["127.0.0.1:1=127.0.0.1:2", " 127.0.0.1:3 = localhost:4"]).unwrap();
        assert_eq!(r.resolve("127.0.0.1:1"), "127.0.0.1:2");
        assert_eq!(r.resolve("127.0.0.1:3"), "localhost:4");
        assert_eq!(r.resolve("127.0.0.1:2"), "127.0.0.1:2");
        assert!(PeerRoutes::parse::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn malformed_or_repeated_routes_are_refused() {
        for bad in [
            &["127.0.0.1:1"][..],
            &["127.0.0.1:1=nope"],
            &["x=127.0.0.1:2"],
            &["127.0.0.1:1=127.0.0.1:2", "127.0.0.1:1=127.0.0.1:3"],
        ] {
            assert!(PeerRoutes::parse(bad).is_err(), "{bad:?}");
        }
    }
}
