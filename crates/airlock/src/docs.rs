//! Shell completions and man pages, generated from the clap definitions so
//! they cannot drift from the CLI.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::{Cli, Shell};

/// Writes the completion script for `shell`. A reader that goes away early
/// (`| head`) is not an error.
pub fn completions(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut cmd = Cli::command();
    // Generated into memory: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "airlock", &mut script);
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes `airlock.1` and `airlock-SUB[-SUB…].1` for every subcommand into
/// `dir` (created if missing); returns the file names, sorted.
pub fn man_pages(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = Cli::command();
    // Subcommands inherit the global options and the version in their pages.
    cmd.build();
    let mut pages = Vec::new();
    write_pages(&cmd, "airlock", dir, &mut pages)?;
    pages.sort();
    Ok(pages)
}

fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, pages: &mut Vec<String>) -> Result<()> {
    let file = format!("{name}.1");
    let page = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut buf)
        .with_context(|| format!("cannot render the man page {file}"))?;
    let path = dir.join(&file);
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    pages.push(file);
    for sub in cmd.get_subcommands() {
        // clap's implicit `help` subcommand has nothing a page would add.
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, pages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand path of the CLI, as `airlock-a-b`.
    fn all_commands(cmd: &clap::Command, name: &str, out: &mut Vec<String>) {
        out.push(name.to_string());
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            all_commands(sub, &format!("{name}-{}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_subcommand_has_a_man_page_that_names_it() {
        let dir = std::env::temp_dir().join(format!("airlock-man-{}", std::process::id()));
        let pages = man_pages(&dir).unwrap();
        let mut want = Vec::new();
        all_commands(&Cli::command(), "airlock", &mut want);
        let mut want: Vec<String> = want.into_iter().map(|n| format!("{n}.1")).collect();
        want.sort();
        assert_eq!(pages, want);
        assert!(want.len() > 30, "{want:?}");
        for p in &pages {
            let text = std::fs::read_to_string(dir.join(p)).unwrap();
            let name = p.trim_end_matches(".1");
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{p} is not roff"
            );
            assert!(text.contains(name), "{p} does not name {name}");
        }
        let request = std::fs::read_to_string(dir.join("airlock-request.1")).unwrap();
        assert!(request.contains("Request an entitlement"), "{request}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn completion_scripts_name_the_subcommands() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F"),
            (Shell::Zsh, "#compdef airlock"),
            (Shell::Fish, "complete -c airlock"),
        ] {
            let mut buf = Vec::new();
            completions(shell, &mut buf).unwrap();
            let text = String::from_utf8(buf).unwrap();
            assert!(text.contains(marker), "{marker}: {text}");
            assert!(text.contains("breakglass") && text.contains("credentials"));
        }
    }
}
