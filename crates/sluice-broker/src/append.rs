//! What an append to a hosted partition did or why it was refused. Its own module so that the
//! error mapping (`error.rs`) does not depend on the partition shell.

use sluice_log::{AppendInfo, LogError};

use crate::producer_state::SequenceError;

#[derive(Debug)]
pub enum AppendError {
    /// This broker does not lead the partition (any more).
    NotLeader,
    Log(LogError),
    Sequence(SequenceError),
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub enum AppendOutcome {
    Appended(AppendInfo),
    /// An idempotent retry of a batch already in the log, at these offsets; nothing written.
    Duplicate {
        base_offset: i64,
    },
}
