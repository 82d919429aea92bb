//! Who may read what. A non-admin sees the requests and grants they made or
//! may review, runs (with transcripts and dry-run output) only where they may
//! read output, and the audit log only as an admin or a member of
//! `[server] auditors`. Refusals to read say "not found", so ids of other
//! people's requests reveal nothing.

use airlock_core::request::Request;
use airlock_core::run::Run;
use airlock_core::{Error, Principal};

use crate::Service;

/// Admins and `[server] auditors` read everything (read-only for auditors).
pub fn reads_everything(app: &Service, who: &Principal) -> bool {
    who.admin || may_read_audit(app, who)
}

/// Whether `who` may read the audit log.
pub fn may_read_audit(app: &Service, who: &Principal) -> bool {
    who.admin || app.config.server.auditors.iter().any(|e| who.matches(e))
}

/// Refuses a non-auditor the audit log.
pub fn check_audit_reader(app: &Service, who: &Principal) -> Result<(), Error> {
    if may_read_audit(app, who) {
        Ok(())
    } else {
        Err(Error::forbidden(
            "only admins and [server] auditors may read the audit log",
        ))
    }
}

/// Entitlements whose requests `who` may review (the rule in force, with service owners).
pub fn reviewable_entitlements(app: &Service, who: &Principal) -> Vec<String> {
    app.config
        .entitlements
        .values()
        .filter(|e| {
            app.approval_rule(&e.approvals, e.service.as_ref())
                .names_reviewer(who)
        })
        .map(|e| e.name.to_string())
        .collect()
}

/// The store filter's scope for `who`: `None` when they read everything.
pub fn request_scope(
    app: &Service,
    who: &Principal,
) -> Option<(airlock_core::UserName, Vec<String>)> {
    (!reads_everything(app, who)).then(|| (who.name.clone(), reviewable_entitlements(app, who)))
}

/// Whether `who` may read request `r`.
pub fn may_read_request(app: &Service, who: &Principal, r: &Request) -> bool {
    if reads_everything(app, who) || r.requester == who.name {
        return true;
    }
    app.config
        .entitlement(r.entitlement.as_str())
        .is_ok_and(|e| {
            app.approval_rule(&e.approvals, e.service.as_ref())
                .names_reviewer(who)
        })
}

/// Whether `who` may read run `run` and its output.
pub fn may_read_run(app: &Service, who: &Principal, run: &Run) -> bool {
    reads_everything(app, who) || crate::proxy::may_read_output(who, run)
}

/// The answer for something `who` may not read: as if it did not exist.
pub fn hidden(what: String) -> Error {
    Error::not_found(what)
}
