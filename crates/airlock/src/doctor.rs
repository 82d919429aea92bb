//! `airlock doctor --config FILE`: for each provider, can airlock reach it
//! and does it hold every privilege it needs, with the statement that fixes
//! what is missing. Read-only on every target.

use std::path::Path;

use anyhow::{anyhow, Result};
use serde::Serialize;
use serde_json::json;

use crate::serve::resolve;
use crate::Output;

/// One provider's part of the report.
#[derive(Serialize)]
struct ProviderReport {
    provider: String,
    kind: &'static str,
    reachable: bool,
    error: Option<String>,
    findings: Vec<airlock_providers::Finding>,
}

impl ProviderReport {
    fn ok(&self) -> bool {
        self.reachable && self.error.is_none() && self.findings.iter().all(|f| f.ok)
    }
}

/// Runs the checks; exit 1 when a provider is unreachable or lacks something.
pub fn doctor(out: Output, config: &Path) -> Result<i32> {
    let r = resolve(config, None)?;
    let ctx = airlock_providers::ProviderContext {
        config_dir: r.config_dir.clone(),
        data_dir: r.data_dir.clone(),
    };
    let providers = r.config.build_providers(&ctx).map_err(|e| anyhow!("{e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports: Vec<ProviderReport> = runtime.block_on(async {
        let mut reports = Vec::new();
        for (name, p) in &providers {
            let mut rep = ProviderReport {
                provider: name.to_string(),
                kind: p.kind(),
                reachable: true,
                error: None,
                findings: Vec::new(),
            };
            // A target that answers but refuses (a missing privilege) is
            // still examined, so the report names everything missing.
            let check = p.check().await;
            match check {
                Err(e) if e.is_retryable() => {
                    rep.reachable = false;
                    rep.error = Some(e.to_string());
                }
                check => match p.doctor(&r.config.targets_of(name)).await {
                    Ok(f) => {
                        rep.findings = f;
                        rep.error = check.err().map(|e| e.to_string());
                    }
                    Err(e) => {
                        rep.reachable = false;
                        rep.error = Some(e.to_string());
                    }
                },
            }
            reports.push(rep);
        }
        reports
    });
    let ok = reports.iter().all(ProviderReport::ok);
    match out {
        Output::Json => say!("{}", json!({"ok": ok, "providers": reports})),
        Output::Text => say!("{}", text(&reports, ok)),
    }
    Ok(if ok { 0 } else { 1 })
}

fn text(reports: &[ProviderReport], ok: bool) -> String {
    let mut lines = Vec::new();
    for r in reports {
        lines.push(format!("{} ({}):", r.provider, r.kind));
        match &r.error {
            Some(e) if !r.reachable => lines.push(format!("  UNREACHABLE  {e}")),
            Some(e) => lines.push(format!("  REFUSED      {e}")),
            None => {}
        }
        if r.error.is_none() && r.findings.is_empty() {
            lines.push("  ok           reachable (no further checks for this kind)".into());
        }
        for f in &r.findings {
            let mark = if f.ok { "ok         " } else { "MISSING    " };
            lines.push(format!("  {mark}  {}: {}", f.check, f.detail));
            if let Some(fix) = &f.fix {
                lines.push(format!("               fix: {fix}"));
            }
        }
    }
    lines.push(if ok {
        "everything airlock needs is in place".into()
    } else {
        "some providers lack what airlock needs: run the fixes above as an administrator of each target, then `airlock doctor` again".into()
    });
    lines.join("\n")
}
