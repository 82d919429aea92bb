//! SSH certificate authority provider (`kind = "ssh"`): access is a short-lived
//! OpenSSH user certificate signed in-process; it ends by itself at
//! `not_after` (native expiry, no call to any server), and earlier through the
//! KRL this CA publishes for sshd's `RevokedKeys`. Nothing is created on the
//! target, so apply/remove have nothing to do and there is nothing to drift.
//!
//! Through the gateway (`access = "gateway"`, entitlement `target_host`) the
//! person holds nothing: each session gets a key of its own, certified until
//! `not_after`, that stays in the server ([`SshProvider::session_login`]).

mod ca_key;
pub mod cert;
pub mod krl;
pub mod upstream;

use std::path::PathBuf;

use airlock_core::ProviderName;
use ssh_key::PrivateKey;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub use ca_key::{CaKeyError, KeyRole, CA_KEY, GATEWAY_HOST_KEY};
pub use cert::{KeyRefusal, CLOCK_SKEW_SECS};

use crate::{
    BuildError, CertificateAuthority, CredentialRequest, GrantSpec, ManagedAccount, Provider,
    ProviderContext, ProviderError,
};

pub mod config;
pub use config::{Config, Target};

/// `[providers.NAME] kind = "ssh"`.
pub struct SshProvider {
    name: ProviderName,
    key_path: PathBuf,
    ca: PrivateKey,
    /// `TrustedUserCAKeys` line.
    ca_public: String,
    /// The CA public key in SSH wire format (named by the KRL).
    ca_blob: Vec<u8>,
    /// With `known_hosts` set: the gateway's host key (OpenSSH PEM) and that file.
    gateway: Option<GatewayKeys>,
}

/// What the gateway needs for this provider's `target_host` entitlements.
struct GatewayKeys {
    host_key: zeroize::Zeroizing<String>,
    known_hosts: PathBuf,
}

impl std::fmt::Debug for SshProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SshProvider")
            .field("name", &self.name)
            .field("key_path", &self.key_path)
            .field("ca_public", &self.ca_public)
            .finish_non_exhaustive()
    }
}

impl SshProvider {
    /// Loads the CA key named by `ca_key` (relative to the config folder),
    /// generating an Ed25519 key there if the file does not exist.
    pub fn new(
        name: ProviderName,
        config: &Config,
        ctx: &ProviderContext,
    ) -> Result<Self, BuildError> {
        config.validate().map_err(|e| BuildError::Config {
            provider: name.to_string(),
            detail: e.detail,
        })?;
        let key_path = ctx.config_dir.join(&config.ca_key);
        let file_error = |e: CaKeyError| BuildError::File {
            provider: name.to_string(),
            detail: e.to_string(),
        };
        let ca = ca_key::load_or_generate(CA_KEY, &key_path, &format!("airlock CA {name}"))
            .map_err(file_error)?;
        let gateway =
            match &config.known_hosts {
                None => None,
                Some(file) => Some(gateway_keys(&name, config, file, ctx).map_err(|detail| {
                    BuildError::File {
                        provider: name.to_string(),
                        detail,
                    }
                })?),
            };
        let encoding = |e: ssh_key::Error| BuildError::Setup {
            provider: name.to_string(),
            detail: format!("cannot encode the CA public key: {e}"),
        };
        let public = ca.public_key();
        let ca_public = public.to_openssh().map_err(encoding)?;
        let ca_blob = public.to_bytes().map_err(encoding)?;
        Ok(SshProvider {
            name,
            key_path,
            ca,
            ca_public,
            ca_blob,
            gateway,
        })
    }

    /// The login the gateway uses for one session of `grant` as of `now`: a
    /// fresh Ed25519 key and a certificate for it with the entitlement's
    /// principals and options, valid until `not_after`. `None` without `target_host`.
    pub fn session_login(
        &self,
        grant: &GrantSpec,
        now: OffsetDateTime,
    ) -> Result<Option<crate::gateway::SshLogin>, ProviderError> {
        let target = grant.target_of::<Target>(&self.name)?;
        let key_id = format!("{}:gateway", crate::certificate_key_id(grant));
        self.login_for(target, key_id, grant.not_after, now)
    }

    /// A fresh key and a certificate for it, as the entitlement `target`
    /// says, valid until `not_after`; `None` without `target_host`.
    fn login_for(
        &self,
        target: &Target,
        key_id: String,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<crate::gateway::SshLogin>, ProviderError> {
        let Some(host_port) = &target.target_host else {
            return Ok(None);
        };
        let Some(gateway) = &self.gateway else {
            return Err(self.refused(format!(
                "`target_host` {host_port} needs `known_hosts` in [providers.{}] (the configuration check should have refused this)",
                self.name
            )));
        };
        let (host, port) = crate::checks::host_port(host_port)
            .ok_or_else(|| self.refused(format!("target_host `{host_port}` is not host:port")))?;
        // Any serial but 0: the key never leaves the server, so no KRL needs it.
        let serial = rand::RngCore::next_u64(&mut rand::rngs::OsRng) | 1;
        let contents = self.contents(target, key_id, serial, not_after, now)?;
        let failed =
            |e: ssh_key::Error| self.refused(format!("making the session key failed: {e}"));
        let key = PrivateKey::random(&mut rand::rngs::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(failed)?;
        let certificate = cert::sign(&self.ca, key.public_key(), &contents)
            .and_then(|c| c.to_openssh())
            .map_err(failed)?;
        let pem = key.to_openssh(ssh_key::LineEnding::LF).map_err(failed)?;
        Ok(Some(crate::gateway::SshLogin {
            host,
            port,
            principals: target.principals.clone(),
            known_hosts: gateway.known_hosts.clone(),
            key: zeroize::Zeroizing::new(pem.to_string()),
            certificate,
            host_key: gateway.host_key.clone(),
        }))
    }

    /// Where the CA private key lives.
    pub fn key_path(&self) -> &std::path::Path {
        &self.key_path
    }

    fn refused(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::Refused {
            provider: self.name.to_string(),
            detail: detail.into(),
        }
    }

    /// Signs the certificate for `grant` as of `now` (see [`Provider::credentials`]).
    pub fn certify(
        &self,
        grant: &GrantSpec,
        request: &CredentialRequest,
        now: OffsetDateTime,
    ) -> Result<serde_json::Value, ProviderError> {
        let key = cert::parse_user_key(request.public_key.as_deref(), self.ca.public_key())
            .map_err(|e| self.refused(e.to_string()))?;
        let serial = match request.serial {
            Some(0) => return Err(self.refused("certificate serial 0 cannot be revoked by a KRL; the server must allocate serials from 1 (a server bug, please report it)")),
            Some(s) => s,
            None => return Err(self.refused("no certificate serial was allocated for this request (a server bug, please report it)")),
        };
        let target = grant.target_of::<Target>(&self.name)?;
        let principals = &target.principals;
        if principals.is_empty() {
            return Err(self.refused(format!(
                "entitlement {} lists no principals; set `principals = [\"LOGIN\"]`",
                grant.entitlement
            )));
        }
        let contents = self.contents(
            target,
            crate::certificate_key_id(grant),
            serial,
            grant.not_after,
            now,
        )?;
        let certificate = cert::sign(&self.ca, &key, &contents)
            .and_then(|c| c.to_openssh())
            .map_err(|e| self.refused(format!("signing the certificate failed: {e}")))?;
        Ok(serde_json::json!({
            "certificate": certificate,
            "serial": serial,
            "valid_after": rfc3339(contents.valid_after),
            "valid_before": rfc3339(contents.valid_before),
            "principals": principals,
            "key_id": contents.key_id,
        }))
    }

    /// What a certificate for `target` says, valid from now (less the clock
    /// skew allowance) until `not_after`; refused once that has passed.
    fn contents<'a>(
        &self,
        target: &'a Target,
        key_id: String,
        serial: u64,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<cert::CertContents<'a>, ProviderError> {
        let now_secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        // Floor: the certificate never outlives the grant, even by a fraction of a second.
        let valid_before = u64::try_from(not_after.unix_timestamp()).unwrap_or(0);
        if valid_before <= now_secs {
            return Err(self.refused(format!(
                "the grant ended at {}; request access again",
                rfc3339(valid_before)
            )));
        }
        Ok(cert::CertContents {
            key_id,
            serial,
            principals: &target.principals,
            extensions: &target.extensions,
            source_address: target.source_address.as_deref(),
            force_command: target.force_command.as_deref(),
            valid_after: now_secs.saturating_sub(CLOCK_SKEW_SECS),
            valid_before,
        })
    }

    /// The KRL revoking `serials`, as generated at `now`.
    pub fn krl_at(&self, serials: &[u64], now: OffsetDateTime) -> Vec<u8> {
        let generated = u64::try_from(now.unix_timestamp()).unwrap_or(0);
        krl::encode(
            &self.ca_blob,
            serials,
            generated,
            &format!("airlock {}", self.name),
        )
    }

    /// `airlock doctor`: logs in to each `target_host` as each principal,
    /// as the gateway would, with a certificate valid for five minutes.
    pub async fn doctor_gateway(
        &self,
        entitlements: &[crate::CatalogTarget],
    ) -> Vec<crate::Finding> {
        let now = OffsetDateTime::now_utc();
        let mut findings = vec![];
        for e in entitlements {
            let Some(target) = e.target_of::<Target>() else {
                continue;
            };
            let Some(host_port) = &target.target_host else {
                continue;
            };
            let key_id = format!("airlock:doctor:{}", e.entitlement);
            let login = match self.login_for(target, key_id, now + time::Duration::minutes(5), now)
            {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(err) => {
                    findings.push(crate::Finding {
                        check: format!("gateway login to {host_port} ({})", e.entitlement),
                        ok: false,
                        detail: err.to_string(),
                        fix: None,
                    });
                    continue;
                }
            };
            for principal in &target.principals {
                let check = format!(
                    "gateway login to {host_port} as {principal} ({})",
                    e.entitlement
                );
                let finding = match upstream::login(&login, principal).await {
                    Ok(c) => {
                        let _ = c
                            .disconnect(russh::Disconnect::ByApplication, "airlock doctor", "en")
                            .await;
                        crate::Finding {
                            check,
                            ok: true,
                            detail: "host key known, certificate accepted".into(),
                            fix: None,
                        }
                    }
                    Err(err) => {
                        let fix = match &err {
                            upstream::LoginError::HostKey(_) => Some(format!(
                                "check the host's key out of band, then `ssh-keyscan -p {} {} >> {}`",
                                login.port,
                                login.host,
                                login.known_hosts.display()
                            )),
                            upstream::LoginError::Refused(_) => Some(format!(
                                "on {}: `airlock ssh ca-key {}` into sshd's TrustedUserCAKeys, and `{principal}` in that account's AuthorizedPrincipalsFile",
                                login.host, self.name
                            )),
                            upstream::LoginError::Unreachable(_) => Some(format!(
                                "check `target_host = \"{host_port}\"` and that airlock's host may reach it"
                            )),
                            upstream::LoginError::Key(_) => None,
                        };
                        crate::Finding {
                            check,
                            ok: false,
                            detail: err.to_string(),
                            fix,
                        }
                    }
                };
                findings.push(finding);
            }
        }
        findings
    }
}

/// Loads (or makes) the gateway host key and checks that `known_hosts` is readable.
fn gateway_keys(
    name: &ProviderName,
    config: &Config,
    known_hosts: &str,
    ctx: &ProviderContext,
) -> Result<GatewayKeys, String> {
    let known_hosts = ctx.config_dir.join(known_hosts);
    if let Err(e) = std::fs::metadata(&known_hosts) {
        return Err(format!(
            "cannot read known_hosts {}: {e}; write the targets' host keys there (`ssh-keyscan -p PORT HOST >> {}`)",
            known_hosts.display(),
            known_hosts.display()
        ));
    }
    let path = ctx.config_dir.join(config.gateway_host_key_file());
    let key = ca_key::load_or_generate(GATEWAY_HOST_KEY, &path, &format!("airlock gateway {name}"))
        .map_err(|e| e.to_string())?;
    let pem = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| format!("cannot encode the gateway host key: {e}"))?;
    Ok(GatewayKeys {
        host_key: zeroize::Zeroizing::new(pem.to_string()),
        known_hosts,
    })
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

#[async_trait::async_trait]
impl Provider for SshProvider {
    fn name(&self) -> &ProviderName {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "ssh"
    }

    /// The key was loaded (and checked) when the provider was built.
    async fn check(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Access is the certificate the requester fetches; nothing to create.
    async fn apply(&self, _grant: &GrantSpec) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The certificate expires at `not_after`; early ends go through the KRL.
    async fn remove(&self, _grant: &GrantSpec) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn list_managed(&self) -> Result<Vec<ManagedAccount>, ProviderError> {
        Ok(Vec::new())
    }

    async fn remove_account(&self, account: &str) -> Result<(), ProviderError> {
        Err(self.refused(format!(
            "ssh creates no accounts, so `{account}` cannot be removed; revoke certificates through the KRL"
        )))
    }

    async fn credentials(
        &self,
        grant: &GrantSpec,
        request: &CredentialRequest,
    ) -> Result<serde_json::Value, ProviderError> {
        self.certify(grant, request, OffsetDateTime::now_utc())
    }

    fn certificate_authority(&self) -> Option<&dyn CertificateAuthority> {
        Some(self)
    }

    fn gateway_login(
        &self,
        grant: &GrantSpec,
    ) -> Result<Option<crate::gateway::Upstream>, ProviderError> {
        Ok(self
            .session_login(grant, OffsetDateTime::now_utc())?
            .map(crate::gateway::Upstream::Ssh))
    }

    async fn doctor(
        &self,
        entitlements: &[crate::CatalogTarget],
    ) -> Result<Vec<crate::Finding>, ProviderError> {
        Ok(self.doctor_gateway(entitlements).await)
    }
}

impl CertificateAuthority for SshProvider {
    fn public_key(&self) -> String {
        self.ca_public.clone()
    }

    /// Unsigned (sshd ignores KRL signatures and OpenSSH 9.4+ rejects signed KRLs).
    fn revocation_list(&self, serials: &[u64]) -> Result<Vec<u8>, ProviderError> {
        Ok(self.krl_at(serials, OffsetDateTime::now_utc()))
    }
}
