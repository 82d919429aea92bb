//! Runs: one execution of a proxied command or an operation. `RunState::apply`
//! is the only way to move a run, so an approved run starts at most once and
//! a finished one never changes.
//!
//! ```text
//! pending ──approve──▶ approved ──start──▶ running ──succeed──▶ succeeded
//!    │ └─deny──▶ denied     │                  ├─fail──▶ failed
//!    ├─lapse──▶ lapsed       └─abort──▶ failed  └─time_out──▶ timed_out
//!    └─abort──▶ failed
//! rate_limited: a refused attempt, recorded as a run that never moves.
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::approval::{ApprovalRule, Reviewable};
use crate::names::{OperationName, ToolName, UserName};
use crate::request::Review;

/// Prefix that tells run ids from request ids (request ids never contain `_`).
pub const RUN_ID_PREFIX: &str = "run_";

/// Opaque run identifier: `run_` and lowercase base32.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Validates an id as found in a URL or CLI argument.
    pub fn parse(s: &str) -> Result<Self, crate::Error> {
        match s.strip_prefix(RUN_ID_PREFIX) {
            Some(rest)
                if (8..=40).contains(&rest.len())
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
            {
                Ok(RunId(s.to_owned()))
            }
            _ => Err(crate::Error::not_found(format!(
                "run `{}`",
                s.chars().take(48).collect::<String>()
            ))),
        }
    }
    /// Whether `s` looks like a run id (for routing CLI arguments).
    pub fn looks_like(s: &str) -> bool {
        s.starts_with(RUN_ID_PREFIX)
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RunId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Pending,
    Approved,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Denied,
    Lapsed,
    RateLimited,
}

/// Something that moves a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunTransition {
    /// Enough approvals.
    Approve,
    /// A reviewer said no.
    Deny,
    /// Nobody decided within the approval window.
    Lapse,
    /// An executor claimed it (exactly once).
    Start,
    /// Exited with status 0.
    Succeed,
    /// Exited non-zero, could not start, was cancelled, or its executor died.
    Fail,
    /// Killed at the tool's timeout.
    TimeOut,
    /// Cancelled (or made impossible) before it started.
    Abort,
}

impl RunTransition {
    /// Every transition, for exhaustive tests.
    pub const ALL: [RunTransition; 8] = [
        RunTransition::Approve,
        RunTransition::Deny,
        RunTransition::Lapse,
        RunTransition::Start,
        RunTransition::Succeed,
        RunTransition::Fail,
        RunTransition::TimeOut,
        RunTransition::Abort,
    ];
    /// The verb used in messages.
    pub fn verb(self) -> &'static str {
        match self {
            RunTransition::Approve => "approve",
            RunTransition::Deny => "deny",
            RunTransition::Lapse => "lapse",
            RunTransition::Start => "start",
            RunTransition::Succeed => "succeed",
            RunTransition::Fail => "fail",
            RunTransition::TimeOut => "time out",
            RunTransition::Abort => "cancel",
        }
    }
}

/// A transition the current state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a run that is {from}", transition.verb())]
pub struct RunTransitionError {
    pub from: RunState,
    pub transition: RunTransition,
}

impl From<RunTransitionError> for crate::Error {
    fn from(e: RunTransitionError) -> Self {
        crate::Error::Conflict {
            current_state: e.from.to_string(),
            message: format!("cannot {} this run", e.transition.verb()),
        }
    }
}

impl RunState {
    /// Every state, for exhaustive tests and metrics.
    pub const ALL: [RunState; 9] = [
        RunState::Pending,
        RunState::Approved,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Denied,
        RunState::Lapsed,
        RunState::RateLimited,
    ];

    /// The state after `t`, or why `t` is not allowed now.
    pub fn apply(self, t: RunTransition) -> Result<RunState, RunTransitionError> {
        use RunState as S;
        use RunTransition as T;
        Ok(match (self, t) {
            (S::Pending, T::Approve) => S::Approved,
            (S::Pending, T::Deny) => S::Denied,
            (S::Pending, T::Lapse) => S::Lapsed,
            (S::Pending | S::Approved, T::Abort) => S::Failed,
            (S::Approved, T::Start) => S::Running,
            (S::Running, T::Succeed) => S::Succeeded,
            (S::Running, T::Fail) => S::Failed,
            (S::Running, T::TimeOut) => S::TimedOut,
            (from, transition) => return Err(RunTransitionError { from, transition }),
        })
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunState::Pending | RunState::Approved | RunState::Running
        )
    }

    /// Name as used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Approved => "approved",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Denied => "denied",
            RunState::Lapsed => "lapsed",
            RunState::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunState {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, crate::Error> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                crate::Error::invalid(
                    "state",
                    format!(
                        "`{}` is not one of pending, approved, running, succeeded, failed, timed_out, denied, lapsed, rate_limited",
                        s.chars().take(40).collect::<String>()
                    ),
                )
            })
    }
}

/// The dry run of an operation, shown to reviewers next to the argv that will run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    /// Exactly what ran.
    pub argv: Vec<String>,
    /// Exit status (`None` if killed or it could not start).
    pub exit_code: Option<i32>,
    /// stdout+stderr, capped (lossy UTF-8).
    pub output: String,
    /// SHA-256 of the kept output bytes.
    pub output_sha256: String,
    /// Whether the output was cut at the cap.
    pub truncated: bool,
    /// Why it did not run to completion, if so.
    pub error: Option<String>,
}

/// One execution of a proxied command or an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    /// The `[[tool]]` whose program runs.
    pub tool: ToolName,
    /// Exactly what runs (or ran): the absolute program path, then the arguments.
    pub argv: Vec<String>,
    /// The operation, for operation runs.
    pub operation: Option<OperationName>,
    /// Canonical parameter values, for operation runs.
    pub params: Option<BTreeMap<String, String>>,
    pub requester: UserName,
    pub reason: String,
    pub state: RunState,
    /// Whether nobody waits to stream it: then it starts as soon as it is
    /// approved (otherwise its requester starts it, or the server does after
    /// a grace period).
    pub detached: bool,
    /// Which rule decided (`rule 2 ["delete", "pod", "*", "-n", "*"]` or `operation NAME`).
    pub rule: String,
    /// What approval it needs.
    /// The approval it needs, copied from its rule or operation when created.
    pub approvals: ApprovalRule,
    pub exit_code: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// SHA-256 (hex) of the stored transcript, once finished.
    pub transcript_sha256: Option<String>,
    /// Bytes in the stored transcript (cap and marker included).
    pub transcript_bytes: Option<u64>,
    /// Bytes the tool wrote in total.
    pub output_bytes: Option<u64>,
    /// Whether the transcript was cut at the cap.
    pub transcript_truncated: bool,
    /// The operation's dry run, if it has one.
    pub dry_run: Option<DryRun>,
    /// Why it failed, lapsed or was refused, in words.
    pub error: Option<String>,
    /// For `rate_limited`: when the next run is allowed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_allowed_at: Option<OffsetDateTime>,
    /// For `pending`: when it lapses without approvals.
    #[serde(with = "time::serde::rfc3339::option")]
    pub lapses_at: Option<OffsetDateTime>,
    /// Reviews, oldest first (stored in their own rows, so never read back from a run document).
    #[serde(skip_deserializing, default)]
    pub reviews: Vec<Review>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Reviewable for Run {
    fn requester(&self) -> &UserName {
        &self.requester
    }
    fn reviews(&self) -> &[Review] {
        &self.reviews
    }
    fn awaits_review(&self) -> bool {
        self.state == RunState::Pending
    }
    fn state_name(&self) -> &str {
        self.state.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn run_ids_never_parse_as_request_ids_and_back() {
        let id = RunId::parse("run_abcdefgh23456789").unwrap();
        assert!(crate::RequestId::parse(id.as_str()).is_err());
        assert!(RunId::parse("abcdefgh23456789").is_err());
        assert!(RunId::parse("run_ABC").is_err());
        assert!(RunId::looks_like(id.as_str()));
    }

    #[test]
    fn an_approved_run_starts_once_and_terminal_states_are_final() {
        let running = RunState::Approved.apply(RunTransition::Start).unwrap();
        assert_eq!(running, RunState::Running);
        assert!(running.apply(RunTransition::Start).is_err());
        for s in RunState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for t in RunTransition::ALL {
                assert!(s.apply(t).is_err(), "{s} -> {t:?}");
            }
        }
        assert!(
            RunState::Pending.apply(RunTransition::Start).is_err(),
            "never runs unapproved"
        );
    }

    #[test]
    fn state_names_round_trip() {
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    proptest! {
        #[test]
        fn no_sequence_runs_without_approval_or_twice(seq in proptest::collection::vec(0usize..8, 0..30)) {
            let mut s = RunState::Pending;
            let mut approved = false;
            let mut starts = 0;
            for i in seq {
                let t = RunTransition::ALL[i];
                if let Ok(n) = s.apply(t) {
                    if n == RunState::Approved { approved = true; }
                    if n == RunState::Running { starts += 1; prop_assert!(approved); }
                    s = n;
                }
            }
            prop_assert!(starts <= 1);
        }
    }
}
