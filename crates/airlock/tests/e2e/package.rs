//! The Debian package: `scripts/package-deb` builds it from the binary under
//! test, `dpkg -i` installs it on this machine, `systemd-analyze verify`
//! accepts the hardened unit, and the installed binary serves as the
//! `airlock` user the package created. Needs root (dpkg); it purges the
//! package again at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kit::*;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Purges the package even when an assertion fails.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "airlock"]).output();
    }
}

#[test]
fn the_deb_installs_a_verified_hardened_unit_and_serves_as_the_airlock_user() {
    let me = run(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&me.stdout).trim(),
        "0",
        "the package test installs with dpkg and needs root (./scripts/test runs as root in CI)"
    );
    let out_dir = std::env::temp_dir().join(unique("airlock-deb-"));
    let built = run(Command::new(repo().join("scripts/package-deb"))
        .args(["--binary", BIN, "--compress", "gzip", "--out"])
        .arg(&out_dir));
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
    assert!(deb.ends_with(".deb"), "{deb}");
    let contents =
        String::from_utf8_lossy(&run(Command::new("dpkg-deb").args(["--contents", &deb])).stdout)
            .into_owned();
    for path in [
        "./usr/bin/airlock",
        "./lib/systemd/system/airlock.service",
        "./etc/airlock/airlock.toml",
        "./usr/share/man/man1/airlock.1.gz",
        "./usr/share/man/man1/airlock-serve.1.gz",
        "./usr/share/man/man1/airlock-connect.1.gz",
        "./usr/share/bash-completion/completions/airlock",
        "./usr/share/zsh/vendor-completions/_airlock",
        "./usr/share/fish/vendor_completions.d/airlock.fish",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from the package:\n{contents}"
        );
    }

    let _purge = Installed;
    run(Command::new("dpkg").args(["-i", &deb]));
    let user = run(Command::new("id").args(["-u", "airlock"]));
    assert!(!String::from_utf8_lossy(&user.stdout).trim().is_empty());
    assert!(Path::new("/var/lib/airlock").is_dir());
    let verify = run(
        Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/airlock.service"])
    );
    assert!(
        !stderr(&verify).contains("Unknown") && !stderr(&verify).contains("Failed"),
        "{}",
        stderr(&verify)
    );
    let unit = std::fs::read_to_string("/lib/systemd/system/airlock.service").unwrap();
    for key in [
        "User=airlock",
        "ProtectSystem=strict",
        "StateDirectory=airlock",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(key), "unit lacks {key:?}");
    }
    // The shipped configuration is one `serve` accepts.
    run(Command::new("/usr/bin/airlock").args(["config", "check", "/etc/airlock/airlock.toml"]));

    // The installed binary serves as the airlock user, from a throwaway config.
    let dir = std::env::temp_dir().join(unique("airlock-deb-run-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    std::fs::write(
        dir.join("airlock.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n\n[[user]]\nname = \"alice\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    run(Command::new("chown")
        .args(["-R", "airlock:airlock"])
        .arg(&dir));
    // setpriv execs serve itself as the airlock user, so the signal below reaches it.
    let mut serve = Command::new("setpriv")
        .args([
            "--reuid=airlock",
            "--regid=airlock",
            "--init-groups",
            "/usr/bin/airlock",
            "serve",
            "--config",
        ])
        .arg(dir.join("airlock.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        if let Ok(r) = ureq::get(&format!("http://127.0.0.1:{port}/healthz"))
            .timeout(Duration::from_secs(1))
            .call()
        {
            break r.status() == 200;
        }
        if Instant::now() > deadline || serve.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let owner = std::fs::metadata(dir.join("data"))
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    run(Command::new("kill").args(["-TERM", &serve.id().to_string()]));
    let status = serve.wait().unwrap();
    assert!(healthy, "the installed airlock did not answer /healthz");
    assert!(status.success(), "serve exited with {status} on SIGTERM");
    assert_ne!(owner, 0, "the data dir is the airlock user's, not root's");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out_dir);
}
