//! The one rule for tests that need something from the machine (a program such as the
//! registry, containerd, PostgreSQL or chromium; root, for namespaces, iptables and mounts;
//! a Python module): such a test runs, or fails saying what to install, unless the run asked
//! by name to skip what is missing.
//!
//! `POLLEN_SKIP_TOOLS=name,name` (or `all`) names what may be skipped: a program's name, `root`,
//! a Python module's name, or a condition's name. A skipped test says so on stderr and, when
//! `POLLEN_SKIP_LOG` names a file, appends a line to it, which the test command prints under
//! its summary. Nothing is ever skipped silently.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// One thing a test needs and whether this machine has it.
#[derive(Debug)]
pub struct Need {
    name: String,
    present: bool,
    install: String,
}

impl Need {
    /// A program on `PATH`; `package` is the Debian package that installs it.
    pub fn program(name: &str, package: &str) -> Self {
        let present = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self {
            name: name.into(),
            present,
            install: format!("apt-get install -y {package}"),
        }
    }

    /// Running as root (network namespaces, iptables, mounts, other users).
    pub fn root() -> Self {
        Self {
            name: "root".into(),
            present: nix::unistd::geteuid().is_root(),
            install: "run the tests as root (CI does)".into(),
        }
    }

    /// A module `python3` can import; `package` is its PyPI name.
    pub fn python_module(module: &str, package: &str) -> Self {
        let present = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self {
            name: module.into(),
            present,
            install: format!("python3 -m pip install {package}"),
        }
    }

    /// Anything else, checked by the caller: `how` says how to provide it.
    pub fn condition(name: &str, present: bool, how: &str) -> Self {
        Self {
            name: name.into(),
            present,
            install: how.into(),
        }
    }
}

/// Whether the calling test runs: true when every need is met; false (after saying so)
/// when what is missing was asked to be skipped by name; otherwise a panic that names what
/// is missing, how to install it and how to skip it.
pub fn runs(needs: &[Need]) -> bool {
    let skip = std::env::var("POLLEN_SKIP_TOOLS").unwrap_or_default();
    match decide(needs, &skip) {
        Verdict::Run => true,
        Verdict::Skip(why) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("a test")
                .to_string();
            let line = format!("SKIPPED {test}: {why}");
            eprintln!("{line}");
            if let Some(log) = std::env::var_os("POLLEN_SKIP_LOG") {
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                {
                    let _ = writeln!(f, "{line}");
                }
            }
            false
        }
        Verdict::Fail(why) => panic!("{why}"),
    }
}

/// What [`runs`] does, given the needs and the value of `POLLEN_SKIP_TOOLS`.
#[derive(Debug, PartialEq)]
enum Verdict {
    Run,
    Skip(String),
    Fail(String),
}

fn decide(needs: &[Need], skip: &str) -> Verdict {
    let missing: Vec<&Need> = needs.iter().filter(|n| !n.present).collect();
    if missing.is_empty() {
        return Verdict::Run;
    }
    let asked = |n: &Need| {
        skip.split(',')
            .map(str::trim)
            .any(|s| s == "all" || s == n.name)
    };
    let names: Vec<&str> = missing.iter().map(|n| n.name.as_str()).collect();
    if missing.iter().all(|n| asked(n)) {
        return Verdict::Skip(format!(
            "missing {names:?} (skip asked by POLLEN_SKIP_TOOLS)"
        ));
    }
    let how: Vec<String> = missing
        .iter()
        .map(|n| format!("{}: {}", n.name, n.install))
        .collect();
    Verdict::Fail(format!(
        "this test needs {names:?}, which this machine lacks ({}); install them, or skip the \
         test on purpose with POLLEN_SKIP_TOOLS={}",
        how.join("; "),
        names.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(name: &str) -> Need {
        Need::condition(name, false, "provide it")
    }

    #[test]
    fn met_needs_run_whatever_is_asked() {
        assert!(runs(&[Need::program("sh", "dash")]));
        assert_eq!(
            decide(&[Need::condition("root", true, "")], "all"),
            Verdict::Run
        );
    }

    #[test]
    fn a_missing_need_fails_with_the_install_line_unless_skipped_by_its_name() {
        let needs = [missing("chromium"), Need::condition("root", true, "")];
        match decide(&needs, "") {
            Verdict::Fail(why) => {
                assert!(why.contains("chromium: provide it"), "{why}");
                assert!(why.contains("POLLEN_SKIP_TOOLS=chromium"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Another name does not cover it; its own name or `all` does.
        assert!(matches!(decide(&needs, "postgresql"), Verdict::Fail(_)));
        assert!(matches!(
            decide(&needs, "postgresql, chromium"),
            Verdict::Skip(_)
        ));
        assert!(matches!(decide(&needs, "all"), Verdict::Skip(_)));
    }

    #[test]
    fn every_missing_need_must_be_named_to_skip() {
        let needs = [missing("root"), missing("ip")];
        assert!(matches!(decide(&needs, "root"), Verdict::Fail(_)));
        assert!(matches!(decide(&needs, "root,ip"), Verdict::Skip(_)));
    }

    #[test]
    #[should_panic(expected = "POLLEN_SKIP_TOOLS=pollen-no-such-tool")]
    fn runs_panics_on_a_missing_tool_nobody_asked_to_skip() {
        assert!(std::env::var_os("POLLEN_SKIP_TOOLS").is_none());
        runs(&[Need::program("pollen-no-such-tool", "none")]);
    }
}
