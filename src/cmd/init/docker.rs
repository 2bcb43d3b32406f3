//! Docker Engine: the mirror goes first in `registry-mirrors` of daemon.json. Docker sends
//! mirror requests for Docker Hub images only; other registries are not mirrored this way.

use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

use super::config_file::{read_existing, under, ConfigFile};
use super::Registry;

pub(crate) const NEXT_STEP: &str = "Restart Docker to use the mirror: systemctl restart docker";

fn merged(existing: Option<&str>, mirror: &str) -> anyhow::Result<String> {
    let mut obj: Map<String, Value> = match existing.map(str::trim) {
        None | Some("") => Map::new(),
        Some(t) => match serde_json::from_str(t).context("daemon.json is not valid JSON")? {
            Value::Object(o) => o,
            _ => anyhow::bail!("daemon.json is not a JSON object"),
        },
    };
    let url = format!("http://{mirror}");
    let mut mirrors: Vec<Value> = match obj.remove("registry-mirrors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => anyhow::bail!("daemon.json: registry-mirrors is not a list"),
    };
    mirrors.retain(|m| m.as_str().map(|s| s.trim_end_matches('/')) != Some(url.as_str()));
    mirrors.insert(0, Value::String(url));
    obj.insert("registry-mirrors".into(), Value::Array(mirrors));
    Ok(serde_json::to_string_pretty(&Value::Object(obj))? + "\n")
}

pub(crate) fn plan(
    root: &Path,
    regs: &[Registry],
    mirror: &str,
) -> anyhow::Result<Vec<ConfigFile>> {
    for r in regs.iter().filter(|r| r.host != "docker.io") {
        eprintln!(
            "note: Docker uses registry-mirrors for Docker Hub only; pulls from {} will not go through Pollen (use containerd, or the HTTPS proxy)",
            r.host
        );
    }
    let path = under(root, "/etc/docker/daemon.json");
    let existing = read_existing(&path)?;
    // Docker Hub's own listener, when it has one, is the mirror Docker uses.
    let mirror = regs
        .iter()
        .find(|r| r.host == "docker.io")
        .map_or(mirror, |r| r.mirror(mirror));
    let content = merged(existing.as_deref(), mirror)
        .with_context(|| format!("merging {}", path.display()))?;
    Ok(vec![ConfigFile { path, content }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_goes_first_once_and_other_settings_stay() {
        let old = r#"{"log-driver":"json-file","registry-mirrors":["https://m.example"]}"#;
        let once = merged(Some(old), "127.0.0.1:4001").expect("merge");
        assert_eq!(merged(Some(&once), "127.0.0.1:4001").expect("again"), once);
        let v: Value = serde_json::from_str(&once).expect("json");
        assert_eq!(v["log-driver"], "json-file");
        assert_eq!(v["registry-mirrors"][0], "http://127.0.0.1:4001");
        assert_eq!(v["registry-mirrors"][1], "https://m.example");
        assert!(merged(Some("[1]"), "m:1").is_err());
        assert!(merged(Some("{nope"), "m:1").is_err());
    }
}
