//! Offsets, epochs and ids. Each wraps the integer Kafka puts on the wire, with a public field:
//! the point is that signatures say which number they mean, not to hide the number.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $inner {
            fn from(v: $name) -> $inner {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

newtype!(
    /// A position in a partition log: the offset of a record, or of the next record to come
    /// (log end, high watermark).
    Offset(i64)
);
newtype!(
    /// The partition leader epoch: bumped by the controller on every leader change, stamped on
    /// every batch the leader appends, and checked by fetchers (KIP-101, KIP-320).
    LeaderEpoch(i32)
);
newtype!(
    /// Kafka's node id (`node.id`, `broker.id`).
    BrokerId(i32)
);
newtype!(
    /// A partition's index within its topic.
    PartitionId(i32)
);
newtype!(
    /// An idempotent producer's id, handed out from blocks the controller allocates.
    ProducerId(i64)
);

impl Offset {
    /// Kafka's "none" (`-1`): no offset known, as on the wire.
    pub const NONE: Offset = Offset(-1);

    /// The offset `n` records further on.
    pub const fn plus(self, n: i64) -> Offset {
        Offset(self.0 + n)
    }
}

impl LeaderEpoch {
    /// Kafka's "no epoch" (`-1`): an old client, or a batch written before epochs.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);

    pub const fn next(self) -> LeaderEpoch {
        LeaderEpoch(self.0 + 1)
    }
}

impl BrokerId {
    /// Kafka's "no broker" (`-1`): no leader, or a consumer rather than a follower.
    pub const NONE: BrokerId = BrokerId(-1);
}

/// One partition of one topic, by name: how the broker keys the partitions it hosts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: PartitionId,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: impl Into<PartitionId>) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition: partition.into(),
        }
    }
}

impl fmt::Display for TopicPartition {
    /// Kafka's `topic-partition`, which is also the partition's directory name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialize_as_bare_numbers() {
        assert_eq!(serde_json::to_string(&BrokerId(3)).unwrap(), "3");
        assert_eq!(serde_json::from_str::<Offset>("-1").unwrap(), Offset::NONE);
        assert_eq!(Offset(41).plus(1), Offset(42));
        assert_eq!(LeaderEpoch(0).next(), LeaderEpoch(1));
        assert_eq!(TopicPartition::new("orders", 7).to_string(), "orders-7");
    }
}
