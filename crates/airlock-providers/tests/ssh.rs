//! The ssh provider against the real OpenSSH tools: `ssh-keygen -L` reads the
//! certificates, `ssh-keygen -Q` checks the KRLs, and a real sshd (one per
//! test, `support/sshd.rs`) lets certificates in or keeps them out.
//! Needs `AIRLOCK_TEST_SSHD` from `./scripts/test`.

#[path = "support/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use airlock_core::{EntitlementName, ProviderName, RequestId, UserName};
use airlock_providers::ssh::SshProvider;
use airlock_providers::ssh::{Config, Target};
use airlock_providers::EntitlementTarget;
use airlock_providers::{
    CertificateAuthority, CredentialRequest, GrantSpec, Provider, ProviderContext, ProviderError,
};
use sshd::{Sshd, TempDir, UserKey};
use time::OffsetDateTime;

fn provider_in(dir: &Path) -> Result<SshProvider, String> {
    let config = Config {
        ca_key: "ssh_ca".into(),
        known_hosts: None,
        gateway_host_key: None,
    };
    let ctx = ProviderContext {
        config_dir: dir.to_path_buf(),
        data_dir: dir.to_path_buf(),
    };
    SshProvider::new(ProviderName::parse("ssh-prod").unwrap(), &config, &ctx)
        .map_err(|e| e.to_string())
}

fn target(principals: &[&str]) -> Target {
    Target {
        principals: principals.iter().map(|p| p.to_string()).collect(),
        extensions: vec!["permit-pty".into()],
        source_address: None,
        force_command: None,
        target_host: None,
    }
}

fn grant(target: Target, not_after: OffsetDateTime) -> GrantSpec {
    GrantSpec {
        request_id: RequestId::parse("req0ssh0test1").unwrap(),
        requester: UserName::parse("alice").unwrap(),
        email: None,
        entitlement: EntitlementName::parse("web-deploy").unwrap(),
        target: EntitlementTarget::Ssh(target),
        not_after,
        secret: [7; 32],
    }
}

fn in_secs(s: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::seconds(s)
}

/// Signs through the Provider trait, as the server does.
fn credentials(
    p: &SshProvider,
    g: &GrantSpec,
    public_key: Option<&str>,
    serial: Option<u64>,
) -> Result<serde_json::Value, ProviderError> {
    let req = CredentialRequest {
        public_key: public_key.map(str::to_string),
        serial,
    };
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(p.credentials(g, &req))
}

fn cert_line(p: &SshProvider, g: &GrantSpec, key: &UserKey, serial: u64) -> String {
    let v = credentials(p, g, Some(&key.public_line), Some(serial)).expect("certificate");
    v["certificate"].as_str().unwrap().to_string()
}

fn tool(cmd: &mut Command) -> (bool, String) {
    let out = cmd.env("TZ", "UTC").output().expect("run OpenSSH tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `ssh-keygen -Q -f KRL CERT`: true when the tool says REVOKED.
fn revoked_per_ssh_keygen(krl: &[u8], cert: &Path) -> bool {
    let file = cert.with_extension("krl");
    std::fs::write(&file, krl).unwrap();
    let (ok, text) = tool(
        Command::new("ssh-keygen")
            .arg("-Q")
            .arg("-f")
            .arg(&file)
            .arg(cert),
    );
    match (ok, text.contains("REVOKED"), text.contains(": ok")) {
        (false, true, false) => true,
        (true, false, true) => false,
        _ => panic!("unexpected ssh-keygen -Q answer: {text}"),
    }
}

fn require_tools() {
    sshd::sshd_binary().unwrap_or_else(|e| panic!("{e}"));
}

// --- the CA key -------------------------------------------------------------

#[test]
fn missing_ca_key_is_generated_private_and_reused() {
    require_tools();
    let dir = TempDir::new("ssh-ca").unwrap();
    let first = provider_in(dir.path()).unwrap();
    let path = dir.path().join("ssh_ca");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "CA key must be private");

    // The file is a key OpenSSH itself reads, and it is the one we publish.
    let (ok, derived) = tool(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&path));
    assert!(ok, "{derived}");
    let published = first.public_key();
    assert!(published.starts_with("ssh-ed25519 "));
    let blob = |l: &str| l.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(blob(&derived), blob(&published));

    let again = provider_in(dir.path()).unwrap();
    assert_eq!(again.public_key(), published, "reused, not regenerated");
}

#[test]
fn replicas_starting_together_agree_on_one_ca_key() {
    require_tools();
    let dir = TempDir::new("ssh-race").unwrap();
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let keys: Vec<String> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                barrier.wait();
                provider_in(&path).unwrap().public_key()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:#?}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["ssh_ca".to_string()],
        "no temp files left behind"
    );
}

#[test]
fn existing_ssh_keygen_ca_key_is_used() {
    require_tools();
    let dir = TempDir::new("ssh-existing").unwrap();
    let path = dir.path().join("ssh_ca");
    let (ok, text) = tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path),
    );
    assert!(ok, "{text}");
    let p = provider_in(dir.path()).unwrap();
    let on_disk = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    let blob = |l: &str| l.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(blob(&p.public_key()), blob(&on_disk));
}

#[test]
fn garbled_ca_key_is_refused_naming_the_file_and_left_alone() {
    let dir = TempDir::new("ssh-garbled").unwrap();
    let path = dir.path().join("ssh_ca");
    std::fs::write(&path, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n").unwrap();
    let err = provider_in(dir.path()).unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("not an OpenSSH private key"), "{err}");
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("not a key"),
        "a bad key is never overwritten"
    );
}

#[test]
fn encrypted_ca_key_is_refused_without_echoing_anything_secret() {
    require_tools();
    let dir = TempDir::new("ssh-encrypted").unwrap();
    let path = dir.path().join("ssh_ca");
    let (ok, text) = tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "hunter2-passphrase", "-f"])
            .arg(&path),
    );
    assert!(ok, "{text}");
    let err = provider_in(dir.path()).unwrap_err();
    assert!(err.contains("encrypted with a passphrase"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn non_ed25519_ca_key_is_refused() {
    require_tools();
    let dir = TempDir::new("ssh-ecdsa-ca").unwrap();
    let path = dir.path().join("ssh_ca");
    let (ok, text) = tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
            .arg(&path),
    );
    assert!(ok, "{text}");
    let err = provider_in(dir.path()).unwrap_err();
    assert!(
        err.contains("SSH CA key") && err.contains("Ed25519 keys only"),
        "{err}"
    );
}

#[test]
fn unreadable_ca_key_is_refused() {
    let dir = TempDir::new("ssh-unreadable").unwrap();
    // A folder where the key should be: unreadable as a file even for root.
    std::fs::create_dir(dir.path().join("ssh_ca")).unwrap();
    let err = provider_in(dir.path()).unwrap_err();
    assert!(err.contains("cannot read the SSH CA key"), "{err}");
}

#[test]
fn missing_folder_for_a_new_ca_key_is_a_clear_error() {
    let dir = TempDir::new("ssh-nofolder").unwrap();
    let config = Config {
        ca_key: "no/such/folder/ssh_ca".into(),
        known_hosts: None,
        gateway_host_key: None,
    };
    let ctx = ProviderContext {
        config_dir: dir.path().to_path_buf(),
        data_dir: dir.path().to_path_buf(),
    };
    let err = SshProvider::new(ProviderName::parse("ssh-prod").unwrap(), &config, &ctx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot create the SSH CA key"), "{err}");
    assert!(err.contains("no/such/folder/ssh_ca"), "{err}");
}

// --- certificates -------------------------------------------------------------

#[test]
fn certificate_fields_as_ssh_keygen_reads_them() {
    require_tools();
    let dir = TempDir::new("ssh-fields").unwrap();
    let p = provider_in(dir.path()).unwrap();
    let key = UserKey::generate(dir.path(), "alice", "ed25519").unwrap();
    let mut t = target(&["deploy", "web"]);
    t.extensions = vec!["permit-pty".into(), "permit-port-forwarding".into()];
    t.source_address = Some("127.0.0.1/32,10.1.0.0/16".into());
    t.force_command = Some("/usr/local/bin/deploy --dry-run".into());
    // A fractional not_after: the certificate must end at its floor, never later.
    let not_after = OffsetDateTime::from_unix_timestamp(in_secs(3600).unix_timestamp()).unwrap()
        + time::Duration::milliseconds(700);
    let g = grant(t, not_after);
    let before = OffsetDateTime::now_utc().unix_timestamp();
    let v = credentials(&p, &g, Some(&key.public_line), Some(77)).unwrap();
    let after = OffsetDateTime::now_utc().unix_timestamp();

    let cert = v["certificate"].as_str().unwrap();
    assert!(
        cert.starts_with("ssh-ed25519-cert-v01@openssh.com "),
        "{cert}"
    );
    assert_eq!(v["serial"], 77);
    assert_eq!(v["key_id"], "airlock:alice:req0ssh0test1");
    assert_eq!(v["principals"], serde_json::json!(["deploy", "web"]));
    let valid_before = OffsetDateTime::parse(
        v["valid_before"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(valid_before.unix_timestamp(), not_after.unix_timestamp());
    let valid_after = OffsetDateTime::parse(
        v["valid_after"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        (before - 60..=after - 60).contains(&valid_after),
        "{valid_after}"
    );

    let path = key.write_cert("fields", cert).unwrap();
    let (ok, listing) = tool(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&path));
    assert!(ok, "{listing}");
    let fmt = |t: i64| {
        OffsetDateTime::from_unix_timestamp(t)
            .unwrap()
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]"
            ))
            .unwrap()
    };
    let expected = [
        "Type: ssh-ed25519-cert-v01@openssh.com user certificate".to_string(),
        "Key ID: \"airlock:alice:req0ssh0test1\"".to_string(),
        "Serial: 77".to_string(),
        format!(
            "Valid: from {} to {}",
            fmt(valid_after),
            fmt(not_after.unix_timestamp())
        ),
    ];
    for line in &expected {
        assert!(listing.contains(line), "missing `{line}` in:\n{listing}");
    }
    let section = |name: &str| -> Vec<String> {
        let mut lines = listing.lines().skip_while(|l| !l.trim().starts_with(name));
        let head = lines.next().unwrap_or_default();
        if head.contains("(none)") {
            return Vec::new();
        }
        lines
            .take_while(|l| l.starts_with("                "))
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(section("Principals:"), vec!["deploy", "web"]);
    assert_eq!(
        section("Extensions:"),
        vec!["permit-port-forwarding", "permit-pty"]
    );
    assert_eq!(
        section("Critical Options:"),
        vec![
            "force-command /usr/local/bin/deploy --dry-run",
            "source-address 127.0.0.1/32,10.1.0.0/16"
        ]
    );
    // Signed by our CA.
    let ca_pub = dir.path().join("ca.pub");
    std::fs::write(&ca_pub, p.public_key()).unwrap();
    let (_, fp) = tool(Command::new("ssh-keygen").arg("-l").arg("-f").arg(&ca_pub));
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        listing.contains(&format!("Signing CA: ED25519 {fp}")),
        "{listing}"
    );
}

#[test]
fn ecdsa_and_rsa_keys_are_certified_too() {
    require_tools();
    let dir = TempDir::new("ssh-keytypes").unwrap();
    let p = provider_in(dir.path()).unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    for (name, kind, cert_type) in [
        (
            "ec",
            "ecdsa",
            "ecdsa-sha2-nistp256-cert-v01@openssh.com user certificate",
        ),
        (
            "rsa",
            "rsa",
            "ssh-rsa-cert-v01@openssh.com user certificate",
        ),
    ] {
        let key = UserKey::generate(dir.path(), name, kind).unwrap();
        let path = key.write_cert("c", &cert_line(&p, &g, &key, 5)).unwrap();
        let (ok, listing) = tool(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&path));
        assert!(ok && listing.contains(cert_type), "{listing}");
    }
}

#[test]
fn bad_requests_are_refused_with_a_clear_reason() {
    require_tools();
    let dir = TempDir::new("ssh-refuse").unwrap();
    let p = provider_in(dir.path()).unwrap();
    let key = UserKey::generate(dir.path(), "alice", "ed25519").unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    let refused = |public_key: Option<&str>, serial: Option<u64>, g: &GrantSpec| match credentials(
        &p, g, public_key, serial,
    ) {
        Err(ProviderError::Refused { provider, detail }) => {
            assert_eq!(provider, "ssh-prod");
            detail
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(refused(None, Some(1), &g).contains("a public key is required"));
    assert!(refused(Some("ssh-ed25519 AAAAnot"), Some(1), &g).contains("not a valid OpenSSH"));
    let cert = cert_line(&p, &g, &key, 1);
    assert!(refused(Some(&cert), Some(2), &g).contains("certificate"));
    assert!(refused(Some(&p.public_key()), Some(2), &g).contains("authority's own key"));
    let private = std::fs::read_to_string(&key.private).unwrap();
    let detail = refused(Some(&private), Some(2), &g);
    assert!(
        detail.contains("private key") && !detail.contains("AAAA"),
        "{detail}"
    );
    assert!(refused(Some(&key.public_line), None, &g).contains("no certificate serial"));
    let ended = grant(target(&["deploy"]), in_secs(-5));
    assert!(refused(Some(&key.public_line), Some(3), &ended).contains("the grant ended"));
    let nobody = grant(target(&[]), in_secs(600));
    assert!(refused(Some(&key.public_line), Some(3), &nobody).contains("no principals"));
}

#[tokio::test]
async fn provider_duties_need_no_target() {
    let dir = TempDir::new("ssh-duties").unwrap();
    let p = provider_in(dir.path()).unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    assert_eq!(p.kind(), "ssh");
    p.check().await.unwrap();
    p.apply(&g).await.unwrap();
    p.apply(&g).await.unwrap();
    p.remove(&g).await.unwrap();
    p.remove(&g).await.unwrap();
    assert!(p.list_managed().await.unwrap().is_empty());
    assert!(matches!(
        p.remove_account("anything").await,
        Err(ProviderError::Refused { .. })
    ));
    let ca = p.certificate_authority().expect("ssh is a CA");
    assert_eq!(ca.public_key(), p.public_key());
}

#[test]
fn build_makes_an_ssh_provider() {
    let dir = TempDir::new("ssh-build").unwrap();
    let config = Config {
        ca_key: "ssh_ca".into(),
        known_hosts: None,
        gateway_host_key: None,
    };
    let ctx = ProviderContext {
        config_dir: dir.path().to_path_buf(),
        data_dir: dir.path().to_path_buf(),
    };
    let p = airlock_providers::build(
        &ProviderName::parse("ssh-prod").unwrap(),
        &airlock_providers::ProviderConfig::Ssh(config),
        &ctx,
    )
    .unwrap();
    assert_eq!(p.kind(), "ssh");
    assert!(p.certificate_authority().is_some());
}

// --- KRLs -------------------------------------------------------------------

#[test]
fn krl_revokes_exactly_the_listed_serials_per_ssh_keygen() {
    require_tools();
    let dir = TempDir::new("ssh-krl").unwrap();
    let p = provider_in(dir.path()).unwrap();
    let key = UserKey::generate(dir.path(), "alice", "ed25519").unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    let revoked = [2u64, 3, 4, 5, 10, 12];
    let krl = p.revocation_list(&revoked).unwrap();
    for serial in [1u64, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, u64::MAX] {
        let cert = key
            .write_cert(&serial.to_string(), &cert_line(&p, &g, &key, serial))
            .unwrap();
        assert_eq!(
            revoked_per_ssh_keygen(&krl, &cert),
            revoked.contains(&serial),
            "serial {serial}"
        );
    }
    // The KRL as OpenSSH lists it.
    let file = dir.path().join("listed.krl");
    std::fs::write(&file, &krl).unwrap();
    let (ok, listing) = tool(
        Command::new("ssh-keygen")
            .args(["-Q", "-l", "-f"])
            .arg(&file),
    );
    assert!(ok, "{listing}");
    let serials: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("serial:"))
        .collect();
    assert_eq!(serials, vec!["serial: 2-5", "serial: 10", "serial: 12"]);
}

#[test]
fn empty_krl_revokes_nothing() {
    require_tools();
    let dir = TempDir::new("ssh-krl-empty").unwrap();
    let p = provider_in(dir.path()).unwrap();
    let key = UserKey::generate(dir.path(), "alice", "ed25519").unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    let cert = key.write_cert("1", &cert_line(&p, &g, &key, 1)).unwrap();
    assert!(!revoked_per_ssh_keygen(
        &p.revocation_list(&[]).unwrap(),
        &cert
    ));
}

#[test]
fn krl_names_its_ca_so_another_cas_serials_stay_valid() {
    require_tools();
    let dir_a = TempDir::new("ssh-krl-a").unwrap();
    let dir_b = TempDir::new("ssh-krl-b").unwrap();
    let a = provider_in(dir_a.path()).unwrap();
    let b = provider_in(dir_b.path()).unwrap();
    let key = UserKey::generate(dir_a.path(), "alice", "ed25519").unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    let cert = key.write_cert("a7", &cert_line(&a, &g, &key, 7)).unwrap();
    assert!(!revoked_per_ssh_keygen(
        &b.revocation_list(&[7]).unwrap(),
        &cert
    ));
    assert!(revoked_per_ssh_keygen(
        &a.revocation_list(&[7]).unwrap(),
        &cert
    ));
}

// --- a real sshd --------------------------------------------------------------

struct World {
    dir: TempDir,
    provider: SshProvider,
    sshd: Sshd,
}

/// A CA, and an sshd trusting it that lets the certificate principal `deploy` in.
fn world(label: &str) -> World {
    require_tools();
    let dir = TempDir::new(label).unwrap();
    let provider = provider_in(dir.path()).unwrap();
    let sshd = Sshd::start(&provider.public_key(), &["deploy"]).unwrap_or_else(|e| panic!("{e}"));
    // Serve the provider's own (empty) KRL from the start, as production would.
    sshd.set_krl(&provider.revocation_list(&[]).unwrap())
        .unwrap();
    World {
        dir,
        provider,
        sshd,
    }
}

#[test]
fn certificate_logs_in_while_valid_and_not_after_ends_it() {
    let w = world("ssh-expiry");
    let key = UserKey::generate(w.dir.path(), "alice", "ed25519").unwrap();
    let not_after = in_secs(3);
    let g = grant(target(&["deploy"]), not_after);
    let cert = key
        .write_cert("short", &cert_line(&w.provider, &g, &key, 1))
        .unwrap();
    w.sshd
        .login(&key.private, &cert)
        .unwrap_or_else(|e| panic!("{e}"));

    // Wait until the certificate's last second has passed.
    let end = OffsetDateTime::from_unix_timestamp(not_after.unix_timestamp()).unwrap();
    let wait = end - OffsetDateTime::now_utc() + time::Duration::milliseconds(1100);
    std::thread::sleep(Duration::try_from(wait).unwrap_or_default());
    let err = w.sshd.login(&key.private, &cert).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        w.sshd.log().contains("expired") || w.sshd.log().contains("not yet valid"),
        "sshd should say why: {}",
        w.sshd.log_tail(10)
    );
}

#[test]
fn revoked_serial_is_refused_while_other_certificates_still_log_in() {
    let w = world("ssh-revoke");
    let alice = UserKey::generate(w.dir.path(), "alice", "ed25519").unwrap();
    let bob = UserKey::generate(w.dir.path(), "bob", "ecdsa").unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    let alice_cert = alice
        .write_cert("c", &cert_line(&w.provider, &g, &alice, 41))
        .unwrap();
    let bob_cert = bob
        .write_cert("c", &cert_line(&w.provider, &g, &bob, 42))
        .unwrap();
    w.sshd
        .login(&alice.private, &alice_cert)
        .unwrap_or_else(|e| panic!("{e}"));
    w.sshd
        .login(&bob.private, &bob_cert)
        .unwrap_or_else(|e| panic!("{e}"));

    w.sshd
        .set_krl(&w.provider.revocation_list(&[3, 41]).unwrap())
        .unwrap();
    let err = w.sshd.login(&alice.private, &alice_cert).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    assert!(w.sshd.log().contains("revoked"), "{}", w.sshd.log_tail(10));
    w.sshd
        .login(&bob.private, &bob_cert)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn principal_the_server_does_not_allow_is_refused() {
    let w = world("ssh-principal");
    let key = UserKey::generate(w.dir.path(), "alice", "ed25519").unwrap();
    let g = grant(target(&["db-admin"]), in_secs(600));
    let cert = key
        .write_cert("other", &cert_line(&w.provider, &g, &key, 9))
        .unwrap();
    let err = w.sshd.login(&key.private, &cert).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
    // The same key certified for an allowed principal gets in.
    let ok = grant(target(&["deploy"]), in_secs(600));
    let cert = key
        .write_cert("deploy", &cert_line(&w.provider, &ok, &key, 10))
        .unwrap();
    w.sshd
        .login(&key.private, &cert)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let w = world("ssh-otherca");
    let other_dir = TempDir::new("ssh-otherca2").unwrap();
    let other = provider_in(other_dir.path()).unwrap();
    let key = UserKey::generate(w.dir.path(), "alice", "ed25519").unwrap();
    let g = grant(target(&["deploy"]), in_secs(600));
    let cert = key
        .write_cert("x", &cert_line(&other, &g, &key, 1))
        .unwrap();
    assert!(w.sshd.login(&key.private, &cert).is_err());
}

#[test]
fn force_command_and_source_address_are_enforced_by_sshd() {
    let w = world("ssh-options");
    let key = UserKey::generate(w.dir.path(), "alice", "ed25519").unwrap();

    let mut forced = target(&["deploy"]);
    forced.force_command = Some("echo forced".into());
    forced.source_address = Some("127.0.0.1/32".into());
    let cert = key
        .write_cert(
            "forced",
            &cert_line(&w.provider, &grant(forced, in_secs(600)), &key, 1),
        )
        .unwrap();
    let out = w.sshd.ssh(&key.private, &cert, "echo ok").unwrap();
    assert!(out.status.success(), "{}", w.sshd.log_tail(10));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "forced");

    let mut elsewhere = target(&["deploy"]);
    elsewhere.source_address = Some("192.0.2.0/24".into());
    let cert = key
        .write_cert(
            "elsewhere",
            &cert_line(&w.provider, &grant(elsewhere, in_secs(600)), &key, 2),
        )
        .unwrap();
    let err = w.sshd.login(&key.private, &cert).unwrap_err();
    assert!(err.contains("Permission denied"), "{err}");
}
