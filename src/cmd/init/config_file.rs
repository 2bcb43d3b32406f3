//! One config file `pollen init` writes: its new content, and how it is written (only when it
//! changes, after a backup of the previous version, atomically through a temporary file).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// A file and the content it should have.
pub(crate) struct ConfigFile {
    pub path: PathBuf,
    pub content: String,
}

/// What applying a file did.
pub(crate) enum Change {
    /// It already had this content.
    Unchanged,
    /// It was (or, in a dry run, would be) written; the previous version's backup.
    Written { backup: Option<PathBuf> },
}

/// The text of a file, or None when it does not exist.
pub(crate) fn read_existing(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

impl ConfigFile {
    pub fn apply(&self, dry_run: bool) -> anyhow::Result<Change> {
        let existing = read_existing(&self.path)?;
        if existing.as_deref() == Some(self.content.as_str()) {
            return Ok(Change::Unchanged);
        }
        let backup = existing.as_ref().map(|_| {
            let mut name = self.path.as_os_str().to_owned();
            name.push(".pollen-backup");
            PathBuf::from(name)
        });
        if dry_run {
            return Ok(Change::Written { backup });
        }
        let dir = self
            .path
            .parent()
            .with_context(|| format!("{} has no parent directory", self.path.display()))?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if let Some(b) = &backup {
            std::fs::copy(&self.path, b).with_context(|| {
                format!("cannot back up {} to {}", self.path.display(), b.display())
            })?;
        }
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".pollen-tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &self.content)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        Ok(Change::Written { backup })
    }
}

/// `root` joined with an absolute path.
pub(crate) fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_backs_up_a_changed_file_and_dry_runs_touch_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("etc/x/hosts.toml");
        let file = |content: &str| ConfigFile {
            path: path.clone(),
            content: content.into(),
        };
        assert!(matches!(
            file("a").apply(true).expect("dry"),
            Change::Written { backup: None }
        ));
        assert!(!path.exists(), "a dry run wrote");
        assert!(matches!(
            file("a").apply(false).expect("write"),
            Change::Written { backup: None }
        ));
        assert!(matches!(
            file("a").apply(false).expect("again"),
            Change::Unchanged
        ));
        let Change::Written { backup: Some(b) } = file("b").apply(false).expect("change") else {
            panic!("no backup of the changed file");
        };
        assert_eq!(std::fs::read_to_string(&b).expect("backup"), "a");
        assert_eq!(std::fs::read_to_string(&path).expect("new"), "b");
    }
}
