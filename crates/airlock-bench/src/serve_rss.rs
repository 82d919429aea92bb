//! Idle RSS of a real `airlock serve` process (the release binary, SQLite
//! store, the bench catalog, reconciler on), read from `/proc/PID/status`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;

use crate::harness::{catalog, wait_healthy};
use crate::report::Row;
use crate::util::{free_port, mib, rss_kib, unique_tag};
use crate::Ctx;

/// Kills the child on every exit path.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the measurement.
pub fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let dir = ctx.work_dir.join(format!("serve-{}", unique_tag()));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let server = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase = \"sqlite://{}\"\ndata_dir = \"{}\"",
        dir.join("airlock.db").display(),
        dir.display()
    );
    let tag = unique_tag();
    let text = catalog(
        &ctx.pg_url,
        &format!("als_{tag}_"),
        &format!("alsrole_{tag}"),
        &server,
    );
    let cfg = dir.join("airlock.toml");
    std::fs::write(&cfg, text)?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let child = Command::new(&ctx.airlock_bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("AIRLOCK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let guard = Guard(child);
    wait_healthy(&format!("http://127.0.0.1:{port}"), Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(Some(guard.0.id()))?;
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(vec![Row::info(
        "RSS, real `airlock serve` process (/proc/PID VmRSS), idle, SQLite store",
        mib(rss),
    )])
}
