//! `[notify.email]`: reviewers get an email when a request or run waits for
//! them. This file owns the SMTP side (lettre, TLS, auth) and the mapping of
//! SMTP answers to retry/drop; who gets what is in [`super::review_mail`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_core::audit_chain::AuditEvent;
use airlock_core::notify::{EmailConfig, SmtpSecurity};
use lettre::message::{header::ContentType, Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::review_mail::{self, Mail};
use super::{DeliveryError, Notifier};
use crate::Service;

/// Longest wait for one SMTP conversation step.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// The email sink.
pub struct Email {
    from: Mailbox,
    to: Vec<String>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    /// Builds the SMTP transport; the password and CA file are read now.
    pub fn new(e: &EmailConfig, config_dir: &Path) -> Result<Email, crate::SetupError> {
        let ctx = "[notify.email]";
        let from: Mailbox = e
            .from
            .parse()
            .map_err(|err| format!("{ctx}: from `{}`: {err}", e.from))?;
        let port = e.port.unwrap_or(match e.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        });
        let tls = || -> Result<TlsParameters, crate::SetupError> {
            let mut b = TlsParameters::builder(e.host.clone());
            if let Some(ca) = &e.ca_file {
                let path = config_dir.join(ca);
                let pem = std::fs::read(&path).map_err(|err| {
                    format!("{ctx}: cannot read ca_file {}: {err}", path.display())
                })?;
                let cert = Certificate::from_pem(&pem).map_err(|err| {
                    format!(
                        "{ctx}: ca_file {} is not a PEM certificate: {err}",
                        path.display()
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|err| crate::SetupError(format!("{ctx}: TLS: {err}")))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.host)
            .port(port)
            .timeout(Some(SMTP_TIMEOUT));
        builder = match e.security {
            SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
            SmtpSecurity::None => builder.tls(Tls::None),
        };
        let password = airlock_core::notify::secret_source(
            ctx,
            "password",
            e.password.as_ref(),
            e.password_file.as_ref(),
            false,
        )
        .map_err(|err| err.to_string())?
        .map(|s| super::read_secret(config_dir, &s).map_err(|err| format!("{ctx}: {err}")))
        .transpose()?;
        match (&e.username, password) {
            (Some(u), Some(p)) => builder = builder.credentials(Credentials::new(u.clone(), p)),
            (None, None) => {}
            (Some(_), None) => {
                return Err(format!(
                    "{ctx}: username is set but password (or password_file) is not"
                )
                .into())
            }
            (None, Some(_)) => {
                return Err(format!("{ctx}: password is set but username is not").into())
            }
        }
        if e.security == SmtpSecurity::None && e.username.is_some() {
            return Err(format!(
                "{ctx}: refusing to send the SMTP password without TLS; use security = \"starttls\" or \"tls\""
            ).into());
        }
        Ok(Email {
            from,
            to: e.to.clone(),
            transport: builder.build(),
        })
    }
}

#[async_trait::async_trait]
impl Notifier for Email {
    fn sink(&self) -> &str {
        "email"
    }

    fn wants(&self, event: &AuditEvent) -> bool {
        matches!(event.kind.as_str(), "request.created" | "run.created")
    }

    async fn deliver(&self, app: &Arc<Service>, event: &AuditEvent) -> Result<(), DeliveryError> {
        let Some(mail) = review_mail::compose(app, event, &self.to).await? else {
            return Ok(());
        };
        let message = self.message(&mail, event.seq)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e)),
        }
    }
}

impl Email {
    fn message(&self, mail: &Mail, seq: u64) -> Result<Message, DeliveryError> {
        let domain = self.from.email.domain().to_string();
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(mail.subject.clone())
            // Stable per event: a re-delivery after a crash is recognisable
            // as the same message by mail clients and archives.
            .message_id(Some(format!("<airlock.{seq}.{}@{domain}>", mail.key)));
        for to in &mail.to {
            let addr: Mailbox = to
                .parse()
                .map_err(|e| DeliveryError::Drop(format!("bad recipient `{to}`: {e}")))?;
            b = b.to(addr);
        }
        b.header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| DeliveryError::Drop(format!("cannot build the message: {e}")))
    }
}

/// Permanent SMTP answers about the message (5xx, e.g. 550 unknown mailbox)
/// drop it; everything else — network, TLS, timeouts, 4xx, and 5xx about
/// authentication (530/534/535/538, a configuration problem that would drop
/// every message alike) — is retried.
fn classify(e: &lettre::transport::smtp::Error) -> DeliveryError {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    let auth = matches!(code.as_str(), "530" | "534" | "535" | "538");
    if e.is_permanent() && !auth {
        DeliveryError::Drop(format!("SMTP server refused the message: {e}"))
    } else {
        DeliveryError::Retry(format!("SMTP: {e}"))
    }
}
