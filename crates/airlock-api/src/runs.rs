//! Runs of the tool proxy as the API answers them (`/api/v1/runs…`,
//! `/api/v1/operations/{name}/runs`, and the `start`/`end` frames of a run
//! stream). Answers accept unknown fields, so an older CLI keeps working
//! against a newer server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::requests::ReviewView;

/// The approval a run needs: `count` distinct approvals from `reviewers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRuleView {
    /// Distinct approvals needed (0 = runs without review).
    pub count: u32,
    /// Groups or users whose members may review.
    pub reviewers: Vec<String>,
}

/// An operation's dry run, shown to reviewers next to the argv that will run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunView {
    /// Exactly what ran.
    pub argv: Vec<String>,
    /// Exit status (`None` if killed or it could not start).
    pub exit_code: Option<i32>,
    /// stdout+stderr, capped (lossy UTF-8).
    pub output: String,
    /// SHA-256 (hex) of the kept output bytes.
    pub output_sha256: String,
    /// Whether the output was cut at the cap.
    pub truncated: bool,
    /// Why it did not run to completion, if so.
    pub error: Option<String>,
}

/// One execution of a proxied command or an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    /// `run_` and lowercase base32.
    pub id: String,
    /// The `[[tool]]` whose program runs.
    pub tool: String,
    /// Exactly what runs (or ran): the absolute program path, then the arguments.
    pub argv: Vec<String>,
    /// The operation, for operation runs.
    pub operation: Option<String>,
    /// Canonical parameter values, for operation runs.
    pub params: Option<BTreeMap<String, String>>,
    /// Who asked.
    pub requester: String,
    /// Why, in the requester's words.
    pub reason: String,
    /// `pending`, `approved`, `running`, `succeeded`, `failed`, `timed_out`,
    /// `denied`, `lapsed` or `rate_limited`.
    pub state: String,
    /// Whether nobody waits to stream it (it starts once approved).
    pub detached: bool,
    /// Which rule decided (`rule 2 [...]` or `operation NAME`).
    pub rule: String,
    /// The approval it needs.
    pub approvals: ApprovalRuleView,
    /// The tool's exit status, once it ran.
    pub exit_code: Option<i32>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
    /// SHA-256 (hex) of the stored transcript, once finished.
    pub transcript_sha256: Option<String>,
    /// Bytes in the stored transcript (cap and marker included).
    pub transcript_bytes: Option<u64>,
    /// Bytes the tool wrote in total.
    pub output_bytes: Option<u64>,
    /// Whether the transcript was cut at the cap.
    pub transcript_truncated: bool,
    /// The operation's dry run, if it has one.
    pub dry_run: Option<DryRunView>,
    /// Why it failed, lapsed or was refused, in words.
    pub error: Option<String>,
    /// RFC 3339; for `rate_limited`: when the next run is allowed.
    pub next_allowed_at: Option<String>,
    /// RFC 3339; for `pending`: when it lapses without approvals.
    pub lapses_at: Option<String>,
    /// Reviews, oldest first.
    pub reviews: Vec<ReviewView>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// Answer of `POST /api/v1/operations/{name}/runs` with `dry_run: true`: what
/// would run and what its dry run said (no run is created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunPreview {
    /// The operation.
    pub operation: String,
    /// Canonical parameter values.
    pub params: BTreeMap<String, String>,
    /// What the operation would run.
    pub argv: Vec<String>,
    /// What the dry run did.
    pub dry_run: DryRunView,
}
