//! Request operations as the API performs them: validate at the edge, ask
//! policy, then let the store lock the row and apply one state-machine
//! transition together with its audit events. Provider calls happen in the
//! reconciler, never here.

use std::sync::Arc;

use airlock_core::approval::Tally;
use airlock_core::audit_chain::AuditDraft;
use airlock_core::config::Entitlement;
use airlock_core::policy::{Action, DecisionContext, PolicyEngine};
use airlock_core::request::{
    GrantPhase, GrantStatus, Request, RequestId, RequestState, Review, ReviewDecision, Transition,
};
use airlock_core::{Error, Principal, Span};
use airlock_providers::{certificate_key_id, CredentialRequest, GrantSpec};
use airlock_store::{CertificateRecord, Change};
use rand::Rng;
use serde_json::json;

use crate::page::{next_cursor, ListParams, Page};
use crate::Service;
use crate::ServiceError;

/// Longest review comment accepted.
pub const MAX_COMMENT_LEN: usize = 1024;

/// A new request id: 16 characters of lowercase base32 (80 random bits).
pub fn new_request_id() -> RequestId {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    let s: String = (0..16)
        .map(|_| ALPHABET[rng.gen_range(0..32)] as char)
        .collect();
    RequestId::parse(&s).expect("generated ids are valid")
}

/// 16 random bytes for a new request's grant-secret derivation.
pub fn new_secret_salt() -> Vec<u8> {
    rand::thread_rng().gen::<[u8; 16]>().to_vec()
}

/// The audit subject for a request.
pub fn subject(id: &RequestId) -> String {
    format!("request:{id}")
}

fn grant(phase: GrantPhase) -> GrantStatus {
    GrantStatus {
        phase,
        attempts: 0,
        last_error: None,
        next_attempt_at: None,
    }
}

pub(crate) fn entitlement_of<'a>(app: &'a Service, r: &Request) -> Result<&'a Entitlement, Error> {
    app.config
        .entitlement(r.entitlement.as_str())
        .map_err(|_| Error::Conflict {
            current_state: r.state.to_string(),
            message: format!(
                "entitlement `{}` is no longer in the catalog",
                r.entitlement
            ),
        })
}

/// Grant phase `applying`, first attempted at `start` when that is ahead
/// (the reconciler claims it then), else at once.
fn applying_from(start: Option<time::OffsetDateTime>, now: time::OffsetDateTime) -> GrantStatus {
    GrantStatus {
        next_attempt_at: start.filter(|s| *s > now),
        ..grant(GrantPhase::Applying)
    }
}

/// Longest text accepted for a start time.
const MAX_START_LEN: usize = 64;

/// A request's `start`: RFC 3339 (`2026-12-03T09:00:00Z`) or `+DURATION`
/// from now (`+2h`); not in the past, at most `ahead` from now.
pub fn parse_start(
    s: &str,
    now: time::OffsetDateTime,
    ahead: Span,
) -> Result<time::OffsetDateTime, Error> {
    let shown: String = s.chars().take(MAX_START_LEN).collect();
    let at = match s.strip_prefix('+') {
        Some(d) => {
            let span: Span = d.parse().map_err(|e: airlock_core::duration::SpanError| {
                Error::invalid("start", format!("`{shown}`: {e}"))
            })?;
            now + span.to_time()
        }
        None => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                Error::invalid(
                    "start",
                    format!(
                        "`{shown}` is neither RFC 3339 (2026-12-03T09:00:00Z) nor +DURATION (+2h)"
                    ),
                )
            })?,
    };
    // Whole seconds: what people write, and what every view shows back.
    let at = at.replace_nanosecond(0).unwrap_or(at);
    if at < now - time::Duration::seconds(5) {
        return Err(Error::invalid(
            "start",
            format!(
                "{} is in the past; leave the start out to begin on approval",
                fmt_time(at)
            ),
        ));
    }
    if at > now + ahead.to_time() {
        return Err(Error::invalid(
            "start",
            format!(
                "{} is more than {ahead} ahead ([server] max_schedule_ahead); ask closer to the time",
                fmt_time(at)
            ),
        ));
    }
    Ok(at)
}

/// What the provider needs for this request's grant.
pub fn grant_spec(app: &Service, r: &Request) -> Result<GrantSpec, Error> {
    let ent = entitlement_of(app, r)?;
    let not_after = r.not_after.ok_or_else(|| Error::Conflict {
        current_state: r.state.to_string(),
        message: "request has no grant window yet".into(),
    })?;
    Ok(GrantSpec {
        request_id: r.id.clone(),
        requester: r.requester.clone(),
        email: app
            .config
            .users
            .get(&r.requester)
            .and_then(|u| u.email.clone()),
        entitlement: ent.name.clone(),
        target: app
            .config
            .target(&ent.name)
            .cloned()
            .ok_or_else(|| Error::Conflict {
                current_state: r.state.to_string(),
                message: format!(
                    "entitlement `{}` has no provider target in the catalog",
                    r.entitlement
                ),
            })?,
        not_after,
        secret: app.keys.grant_secret(r.id.as_str(), &r.secret_salt),
    })
}

/// Refuses over-long comments and control characters (newlines allowed).
pub fn check_comment(comment: &Option<String>) -> Result<(), Error> {
    if let Some(c) = comment {
        if c.len() > MAX_COMMENT_LEN {
            return Err(Error::invalid(
                "comment",
                format!("longer than {MAX_COMMENT_LEN} bytes"),
            ));
        }
        if c.chars().any(|ch| ch.is_control() && ch != '\n') {
            return Err(Error::invalid("comment", "contains control characters"));
        }
    }
    Ok(())
}

/// Creates a request (or, with `breakglass`, self-activates a break-glass one).
pub async fn create(
    app: &Arc<Service>,
    who: &Principal,
    entitlement: &str,
    duration: &str,
    reason: &str,
    breakglass: bool,
    start: Option<&str>,
) -> Result<Request, ServiceError> {
    let now = app.now();
    let ent = app.config.entitlement(entitlement)?;
    let start = start
        .map(|s| parse_start(s, now, app.config.server.max_schedule_ahead))
        .transpose()?;
    if breakglass && start.is_some() {
        return Err(Error::invalid(
            "start",
            "break-glass access starts at once; leave out the start",
        )
        .into());
    }
    let dur: Span = duration
        .parse()
        .map_err(|e: airlock_core::duration::SpanError| {
            Error::invalid("duration", e.to_string())
        })?;
    if dur > ent.max_duration {
        return Err(Error::invalid(
            "duration",
            format!(
                "{dur} is longer than the maximum of {} for `{}`; ask for less",
                ent.max_duration, ent.name
            ),
        )
        .into());
    }
    ent.reason.check(reason)?;
    crate::locks::check_request(app, &who.name, &ent.name).await?;
    if ent.mfa && !who.mfa {
        return Err(Error::forbidden(format!(
            "`{}` requires a multi-factor login and yours was not: log in again with MFA \
             (`airlock login`, or sign out and in on the web UI) and retry",
            ent.name
        ))
        .into());
    }
    let action = if breakglass {
        Action::Breakglass
    } else {
        Action::Request
    };
    let ctx = DecisionContext {
        duration: dur.as_secs(),
        reason: reason.to_string(),
        mfa: who.mfa,
        hour: now.hour(),
        requester: None,
    };
    let decision = app.policy.decide(who, action, ent, &ctx);
    if !decision.allowed {
        return Err(Error::forbidden(PolicyEngine::explain_refusal(action, ent, &decision)).into());
    }
    // Do not ask reviewers for access that cannot be granted right now.
    let provider = app.provider(&ent.provider)?;
    if provider.requires_email() && who.email.is_none() {
        return Err(Error::invalid(
            "entitlement",
            format!(
                "{} is granted to an email address (provider {} is {}), and user {} has none: \
                 add `email` to their [[user]] entry or log in with OIDC",
                ent.name,
                ent.provider,
                provider.kind(),
                who.name
            ),
        )
        .into());
    }
    if let Err(e) = provider.check().await {
        app.metrics.provider_error(ent.provider.as_str());
        return Err(Error::Unavailable {
            message: e.to_string(),
            retry_after: Some(30),
        }
        .into());
    }
    let rule = app.approval_rule(&ent.approvals, ent.service.as_ref());
    if !breakglass && rule.count > 0 && rule.reviewers.is_empty() {
        // Only a service routes reviewers dynamically; without its owners nobody could approve.
        return Err(Error::Unavailable {
            message: format!(
                    "`{}` is reviewed by the owners of service `{}`, which the service catalog does not list (is catalog_url reachable?); ask an operator to fix the catalog",
                    ent.name,
                    ent.service.as_ref().map(|s| s.as_str()).unwrap_or("?")
                ),
            retry_after: Some(60),
        }
        .into());
    }
    let id = new_request_id();
    let auto = !breakglass && ent.approvals.count == 0;
    let approved = breakglass || auto;
    let request = Request {
        id: id.clone(),
        entitlement: ent.name.clone(),
        requester: who.name.clone(),
        reason: reason.to_string(),
        state: if approved {
            RequestState::Approved
        } else {
            RequestState::Pending
        },
        requested_duration: dur,
        // A scheduled request carries its start from the beginning.
        not_before: if approved {
            Some(start.unwrap_or(now))
        } else {
            start
        },
        not_after: approved.then(|| start.unwrap_or(now) + dur.to_time()),
        breakglass,
        post_review_closed: false,
        reviews: vec![],
        grant: if approved {
            applying_from(start, now)
        } else {
            grant(GrantPhase::None)
        },
        created_at: now,
        updated_at: now,
        secret_salt: new_secret_salt(),
    };
    let sub = subject(&id);
    let mut audit = vec![AuditDraft::new(
        "request.created",
        who.name.as_str(),
        sub.clone(),
        json!({"entitlement": ent.name, "duration": dur.as_secs(), "reason": reason, "breakglass": breakglass, "policies": decision.policies}),
    )];
    if breakglass {
        audit.push(AuditDraft::new(
            "breakglass.activated",
            who.name.as_str(),
            sub.clone(),
            json!({"breakglass": true, "entitlement": ent.name, "reason": reason, "not_after": request.not_after.map(fmt_time)}),
        ));
    } else if auto {
        audit.push(AuditDraft::new(
            "request.approved",
            "system",
            sub,
            json!({"auto": true}),
        ));
    }
    let lapses_at = now + ent.approval_timeout.to_time();
    let stored = request.clone();
    app.db(move |s| s.create_request(&stored, lapses_at, &audit, now))
        .await?;
    if breakglass {
        app.metrics.people.breakglass(ent.name.as_str());
        app.metrics.people.approved(id.as_str(), "breakglass");
        tracing::warn!(
            target: "airlock::breakglass",
            breakglass = true,
            request = %id,
            user = %who.name,
            entitlement = %ent.name,
            reason,
            "BREAK-GLASS access activated; a post-incident review is now open"
        );
    }
    if auto {
        app.metrics.people.approved(id.as_str(), "auto");
    }
    if approved {
        app.metrics.approval_latency.observe(0.0);
        app.wake.notify_one();
    }
    Ok(request)
}

/// Records an approve/deny review; for break-glass requests, closes the post-incident review.
pub async fn review(
    app: &Arc<Service>,
    who: &Principal,
    id: RequestId,
    decision: ReviewDecision,
    comment: Option<String>,
    surface: crate::surface::Surface,
) -> Result<Request, ServiceError> {
    check_comment(&comment)?;
    let lookup = id.clone();
    let current = app
        .db(move |s| s.get_request(&lookup))
        .await?
        .ok_or_else(|| Error::not_found(format!("request `{id}`")))?;
    if current.requester == who.name {
        return Err(Error::forbidden(
            "you cannot review your own request; another reviewer must decide",
        )
        .into());
    }
    let ent = entitlement_of(app, &current)?.clone();
    let now = app.now();
    let review = Review {
        reviewer: who.name.clone(),
        decision,
        comment: comment.clone(),
        at: now,
    };
    let actor = who.name.to_string();
    let sub = subject(&id);
    let rule = app.approval_rule(&ent.approvals, ent.service.as_ref());
    if current.breakglass {
        // The same check decides who sees it in their queue (crate::queue).
        rule.check_post_review_closer(who, &current)?;
        let r = app
            .db(move |s| {
                s.update_request(&id, now, &mut |r| {
                    if r.post_review_closed {
                        return Err(Error::Conflict {
                            current_state: r.state.to_string(),
                            message: "the post-incident review is already closed".into(),
                        });
                    }
                    Ok(Change {
                        review: Some(review.clone()),
                        post_review_closed: Some(true),
                        audit: vec![AuditDraft::new(
                            "breakglass.reviewed",
                            &actor,
                            sub.clone(),
                            json!({"breakglass": true, "decision": decision.as_str(), "comment": comment}),
                        )],
                        ..Change::default()
                    })
                })
            })
            .await?;
        return Ok(r);
    }
    crate::locks::check_request(app, &current.requester, &current.entitlement).await?;
    let ctx = DecisionContext {
        duration: current.requested_duration.as_secs(),
        reason: current.reason.clone(),
        mfa: who.mfa,
        hour: now.hour(),
        requester: Some(current.requester.to_string()),
    };
    // Policy sees the rule in force (service owners as reviewers).
    let mut ent = ent;
    ent.approvals = rule.clone();
    let d = app.policy.decide(who, Action::Review, &ent, &ctx);
    if !d.allowed {
        return Err(
            Error::forbidden(PolicyEngine::explain_refusal(Action::Review, &ent, &d)).into(),
        );
    }
    let who2 = who.clone();
    let r = app
        .db(move |s| {
            s.update_request(&id, now, &mut |r| {
                if r.state != RequestState::Pending {
                    return Err(Error::Conflict {
                        current_state: r.state.to_string(),
                        message: "only pending requests can be reviewed".into(),
                    });
                }
                rule.check_reviewer(&who2, r)?;
                let mut next = r.clone();
                next.reviews.push(review.clone());
                let mut audit = vec![AuditDraft::new(
                    "request.reviewed",
                    &actor,
                    sub.clone(),
                    json!({"decision": decision.as_str(), "comment": comment, "surface": surface.as_str()}),
                )];
                let mut change = Change { review: Some(review.clone()), ..Change::default() };
                match rule.tally(&next) {
                    Tally::Approved => {
                        // A scheduled request starts at its start, not at approval.
                        let begin = r.not_before.unwrap_or(now);
                        let end = begin + r.requested_duration.to_time();
                        change.state = Some(r.state.apply(Transition::Approve)?);
                        change.window = Some((begin, end));
                        change.grant = Some(applying_from(Some(begin), now));
                        audit.push(AuditDraft::new(
                            "request.approved",
                            &actor,
                            sub.clone(),
                            json!({"approvers": next.reviews.iter().filter(|v| v.decision == ReviewDecision::Approve).map(|v| v.reviewer.as_str()).collect::<Vec<_>>(),
                                   "not_before": fmt_time(begin), "not_after": fmt_time(end)}),
                        ));
                    }
                    Tally::Denied => {
                        change.state = Some(r.state.apply(Transition::Deny)?);
                        audit.push(AuditDraft::new("request.denied", &actor, sub.clone(), json!({})));
                    }
                    Tally::Waiting { have, need } => {
                        audit[0].data["approvals"] = json!({"have": have, "need": need});
                    }
                }
                change.audit = audit;
                Ok(change)
            })
        })
        .await?;
    let waited = (now - r.created_at).as_seconds_f64();
    if r.reviews.len() == 1 {
        app.metrics
            .people
            .first_review(r.entitlement.as_str(), surface.as_str(), waited);
    }
    if r.state == RequestState::Approved {
        app.metrics.people.approved(r.id.as_str(), surface.as_str());
        app.metrics.approval_latency.observe(waited);
        app.wake.notify_one();
    }
    Ok(r)
}

/// The requester takes back a pending request.
pub async fn withdraw(
    app: &Arc<Service>,
    who: &Principal,
    id: RequestId,
) -> Result<Request, ServiceError> {
    let now = app.now();
    let actor = who.name.clone();
    app.db(move |s| {
        s.update_request(&id, now, &mut |r| {
            if r.requester != actor {
                return Err(Error::forbidden(
                    "only the requester can withdraw a request",
                ));
            }
            Ok(Change {
                state: Some(r.state.apply(Transition::Withdraw)?),
                audit: vec![AuditDraft::new(
                    "request.withdrawn",
                    actor.as_str(),
                    subject(&r.id),
                    json!({}),
                )],
                ..Change::default()
            })
        })
    })
    .await
}

/// Ends an active grant early (requester, a named reviewer or an admin).
pub async fn revoke(
    app: &Arc<Service>,
    who: &Principal,
    id: RequestId,
    comment: Option<String>,
) -> Result<Request, ServiceError> {
    check_comment(&comment)?;
    let now = app.now();
    let who = who.clone();
    let app2 = app.clone();
    let r = app
        .db(move |s| {
            s.update_request(&id, now, &mut |r| {
                let ent = entitlement_of(&app2, r)?;
                let rule = app2.approval_rule(&ent.approvals, ent.service.as_ref());
                let may = r.requester == who.name || who.admin || rule.names_reviewer(&who);
                if !may {
                    return Err(Error::forbidden(
                        "only the requester, a reviewer of this entitlement or an admin can revoke",
                    ));
                }
                Ok(Change {
                    state: Some(r.state.apply(Transition::Revoke)?),
                    grant: Some(grant(GrantPhase::Removing)),
                    audit: vec![AuditDraft::new(
                        "request.revoked",
                        who.name.as_str(),
                        subject(&r.id),
                        json!({"comment": comment, "breakglass": r.breakglass}),
                    )],
                    ..Change::default()
                })
            })
        })
        .await?;
    app.wake.notify_one();
    Ok(r)
}

/// Credentials for an active grant; only the requester may read them.
pub async fn credentials(
    app: &Arc<Service>,
    who: &Principal,
    id: RequestId,
    public_key: Option<String>,
) -> Result<serde_json::Value, ServiceError> {
    let lookup = id.clone();
    let r = app
        .db(move |s| s.get_request(&lookup))
        .await?
        .ok_or_else(|| Error::not_found(format!("request `{id}`")))?;
    if r.requester != who.name {
        return Err(Error::forbidden("only the requester can read a grant's credentials").into());
    }
    if r.state != RequestState::Active {
        return Err(Error::Conflict {
            current_state: r.state.to_string(),
            message: "credentials exist only while the grant is active".into(),
        }
        .into());
    }
    let ent = entitlement_of(app, &r)?;
    if !ent.access.allows_credentials() {
        return Err(Error::forbidden(format!(
            "entitlement {} is used through the gateway only (access = \"gateway\"): its credential never leaves the server; run `airlock connect {}`",
            ent.name, r.id
        ))
        .into());
    }
    let spec = grant_spec(app, &r)?;
    let provider = app.provider(&ent.provider)?;
    let mut input = CredentialRequest {
        public_key,
        serial: None,
    };
    if provider.certificate_authority().is_some() {
        let key = input.public_key.as_deref().ok_or_else(|| {
            Error::invalid(
                "public_key",
                format!(
                    "entitlement {} grants a certificate: pass your public key \
                     (airlock credentials {} --public-key ~/.ssh/id_ed25519.pub)",
                    ent.name, r.id
                ),
            )
        })?;
        if key.len() > MAX_PUBLIC_KEY_LEN || key.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::invalid(
                "public_key",
                "not one OpenSSH public key line (at most 16 KiB, no control characters)",
            )
            .into());
        }
        // The serial is recorded (and audited) before anything is signed, so
        // every certificate that exists can be revoked.
        let cert = CertificateRecord {
            provider: ent.provider.to_string(),
            request_id: r.id.clone(),
            key_id: certificate_key_id(&spec),
            valid_before: spec.not_after,
        };
        let now = app.now();
        let actor = who.name.to_string();
        let subject = subject(&r.id);
        let key_id = cert.key_id.clone();
        let serial = app
            .db(move |s| {
                s.issue_certificate(
                    &cert,
                    &mut |serial| {
                        AuditDraft::new(
                            "credential.issued",
                            &actor,
                            subject.clone(),
                            json!({"provider": cert.provider, "serial": serial, "key_id": key_id,
                                   "valid_before": fmt_time(cert.valid_before)}),
                        )
                    },
                    now,
                )
            })
            .await?;
        input.serial = Some(serial);
    } else if input.public_key.is_some() {
        return Err(Error::invalid(
            "public_key",
            format!(
                "entitlement {} does not use a public key (provider {} is {})",
                ent.name,
                ent.provider,
                provider.kind()
            ),
        )
        .into());
    }
    // Audited before the secret is handed out: no audit, no credentials.
    let read = AuditDraft::new(
        "credential.read",
        who.name.as_str(),
        subject(&r.id),
        json!({"entitlement": ent.name, "provider": ent.provider, "serial": input.serial}),
    );
    let now = app.now();
    app.db(move |s| s.append_audit(&[read], now)).await?;
    provider
        .credentials(&spec, &input)
        .await
        .map_err(ServiceError::from)
}

/// Longest public key accepted for certification.
pub const MAX_PUBLIC_KEY_LEN: usize = 16 * 1024;

/// RFC 3339 in UTC, as every timestamp on the wire.
pub fn fmt_time(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `GET /api/v1/requests`: one page of the requests `who` may read; with
/// `to_review`, their reviewer queue (pending and open post-incident reviews).
pub async fn list(
    app: &Arc<Service>,
    who: &Principal,
    q: &ListParams,
) -> Result<Page<Request>, ServiceError> {
    let mut filter = airlock_store::RequestFilter {
        limit: q.limit,
        state: q.state()?,
        requester: q.requester(who),
        ..Default::default()
    };
    if q.to_review {
        let limit = filter.limit;
        let mut items = crate::queue::for_reviewer(app, who, limit)
            .await?
            .into_list(limit as usize);
        items.retain(|r| {
            filter.state.is_none_or(|s| r.state == s)
                && filter.requester.as_ref().is_none_or(|n| &r.requester == n)
        });
        return Ok(Page { items, next: None });
    }
    filter.visible_to = crate::visibility::request_scope(app, who);
    filter.after = q.after(RequestId::parse)?;
    let limit = filter.limit;
    let items = app.db_untracked(move |s| s.list_requests(&filter)).await?;
    let next = next_cursor(
        items.len(),
        limit,
        items.last().map(|r| (r.created_at, r.id.as_str())),
    );
    Ok(Page { items, next })
}
