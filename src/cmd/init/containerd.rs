//! containerd: a `hosts.toml` per registry that lists the Pollen mirror first, with an
//! `X-Pollen-Registry` header naming the registry (so the mirror knows the scheme too), and
//! `config_path` set in containerd's config.toml when that file exists and lacks it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use toml_edit::{value, Array, DocumentMut, Item, Table};

use super::config_file::{read_existing, under, ConfigFile};
use super::Registry;

pub(crate) const NEXT_STEP: &str = "containerd reads hosts.toml files on every pull; restart \
containerd (systemctl restart containerd) only if its config.toml was changed above. For `ctr`, \
pass --hosts-dir with the certs.d directory.";

const DEFAULT_CERTS_D: &str = "/etc/containerd/certs.d";

/// The key path of `config_path` for the config's schema version.
fn config_path_keys(doc: &DocumentMut) -> [&'static str; 4] {
    let version = doc.get("version").and_then(Item::as_integer).unwrap_or(2);
    if version >= 3 {
        [
            "plugins",
            "io.containerd.cri.v1.images",
            "registry",
            "config_path",
        ]
    } else {
        [
            "plugins",
            "io.containerd.grpc.v1.cri",
            "registry",
            "config_path",
        ]
    }
}

fn get_path<'a>(doc: &'a DocumentMut, keys: &[&str]) -> Option<&'a Item> {
    let mut cur = doc.as_item();
    for k in keys {
        cur = cur.get(k)?;
    }
    Some(cur)
}

/// containerd's config.toml with `config_path` set (None when it needs no change or does not
/// exist), and the certs.d directory to use.
fn main_config(root: &Path) -> anyhow::Result<(Option<ConfigFile>, PathBuf)> {
    let path = under(root, "/etc/containerd/config.toml");
    let Some(text) = read_existing(&path)? else {
        return Ok((None, under(root, DEFAULT_CERTS_D)));
    };
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    let keys = config_path_keys(&doc);
    if let Some(existing) = get_path(&doc, &keys).and_then(Item::as_str) {
        // The first directory of a colon-separated list is where containerd looks first.
        let first = existing.split(':').next().unwrap_or(DEFAULT_CERTS_D);
        return Ok((None, under(root, first)));
    }
    let mut cur = doc.as_table_mut();
    for k in &keys[..3] {
        let entry = cur.entry(k).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        cur = entry
            .as_table_mut()
            .with_context(|| format!("{}: `{k}` is not a table", path.display()))?;
    }
    cur.insert(keys[3], value(DEFAULT_CERTS_D));
    Ok((
        Some(ConfigFile {
            path,
            content: doc.to_string(),
        }),
        under(root, DEFAULT_CERTS_D),
    ))
}

/// `hosts.toml` for one registry, merged into what is there: the server is kept, the mirror
/// goes first among the hosts, other hosts stay after it.
fn hosts_toml(existing: Option<&str>, reg: &Registry, mirror: &str) -> anyhow::Result<String> {
    let mut doc: DocumentMut = existing
        .unwrap_or("")
        .parse()
        .context("the existing hosts.toml is not valid TOML")?;
    if doc.get("server").is_none() {
        doc.insert("server", value(reg.url.as_str()));
    }
    let key = format!("http://{mirror}");
    let mut ours = Table::new();
    let mut caps = Array::new();
    caps.push("pull");
    caps.push("resolve");
    ours.insert("capabilities", value(caps));
    let mut header = Table::new();
    let mut reg_url = Array::new();
    reg_url.push(reg.url.as_str());
    header.insert("X-Pollen-Registry", value(reg_url));
    ours.insert("header", Item::Table(header));
    let mut hosts = Table::new();
    hosts.set_implicit(true);
    hosts.insert(&key, Item::Table(ours));
    if let Some(old) = doc.get("host").and_then(Item::as_table) {
        for (k, v) in old.iter().filter(|(k, _)| *k != key) {
            hosts.insert(k, v.clone());
        }
    }
    doc.insert("host", Item::Table(hosts));
    let mut text = doc.to_string();
    if existing.is_none() {
        text = format!(
            "# Written by `pollen init containerd`: pulls from {} go through the Pollen daemon's\n# mirror at {mirror} first, and straight to the registry when it is unavailable.\n{text}",
            reg.host
        );
    }
    Ok(text)
}

pub(crate) fn plan(
    root: &Path,
    regs: &[Registry],
    mirror: &str,
) -> anyhow::Result<Vec<ConfigFile>> {
    let (main, certs_d) = main_config(root)?;
    let mut files: Vec<ConfigFile> = main.into_iter().collect();
    for reg in regs {
        let path = certs_d.join(&reg.host).join("hosts.toml");
        let existing = read_existing(&path)?;
        let content = hosts_toml(existing.as_deref(), reg, reg.mirror(mirror))
            .with_context(|| format!("merging {}", path.display()))?;
        files.push(ConfigFile { path, content });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry {
            host: "127.0.0.1:5000".into(),
            url: "http://127.0.0.1:5000".into(),
            own_mirror: None,
        }
    }

    #[test]
    fn new_hosts_toml_lists_the_mirror_with_the_registry_header() {
        let t = hosts_toml(None, &reg(), "127.0.0.1:4001").expect("toml");
        let doc: toml::Value = toml::from_str(&t).expect("valid");
        assert_eq!(doc["server"].as_str(), Some("http://127.0.0.1:5000"));
        let host = &doc["host"]["http://127.0.0.1:4001"];
        assert_eq!(host["capabilities"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            host["header"]["X-Pollen-Registry"][0].as_str(),
            Some("http://127.0.0.1:5000")
        );
    }

    #[test]
    fn merging_keeps_other_hosts_after_the_mirror_and_is_idempotent() {
        let old = "server = \"https://r\"\n[host.\"https://other\"]\ncapabilities = [\"pull\"]\n";
        let once = hosts_toml(Some(old), &reg(), "127.0.0.1:4001").expect("merge");
        let twice = hosts_toml(Some(&once), &reg(), "127.0.0.1:4001").expect("again");
        assert_eq!(once, twice);
        assert!(once.contains("server = \"https://r\""));
        let mirror = once.find("127.0.0.1:4001").expect("mirror");
        let other = once.find("https://other").expect("other");
        assert!(mirror < other, "{once}");
    }

    #[test]
    fn config_path_is_added_once_and_an_existing_one_is_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(cfg.parent().expect("parent")).expect("mkdir");
        std::fs::write(
            &cfg,
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"x\"\n",
        )
        .expect("write");
        let (file, certs) = main_config(dir.path()).expect("plan");
        let file = file.expect("a change");
        assert!(
            file.content
                .contains("config_path = \"/etc/containerd/certs.d\""),
            "{}",
            file.content
        );
        assert!(file.content.contains("sandbox_image"));
        assert_eq!(certs, dir.path().join("etc/containerd/certs.d"));
        std::fs::write(&cfg, "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\nconfig_path = \"/opt/certs:/etc/x\"\n").expect("write");
        let (file, certs) = main_config(dir.path()).expect("plan");
        assert!(file.is_none());
        assert_eq!(certs, dir.path().join("opt/certs"));
    }
}
