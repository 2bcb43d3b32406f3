//! CRI-O and Podman (containers-registries.conf): a drop-in owned by Pollen that adds the
//! mirror in front of each registry.
//!
//! These clients cannot tell a mirror which registry a request is for. A registry given with
//! its own mirror listener (`--registry REG=ADDR`) goes to that listener, which serves only
//! it: the `/v2/` check meets that registry's auth challenge and token scopes name the real
//! repository, so private registries work. Otherwise the mirror location carries the
//! registry as a namespace, `MIRROR/pollen-registry/SCHEME/HOST_PORT`, which the daemon's
//! mirror reads back; that serves anonymous registries, but the `/v2/` check (which drops the
//! namespace) reaches the daemon's default registry, so a registry that asks for credentials
//! never gets them (docs/OPERATIONS.md). Docker Hub goes to the mirror without one (the
//! daemon's default registry).

use std::path::Path;

use super::config_file::{under, ConfigFile};
use super::Registry;

pub(crate) const NEXT_STEP_CRIO: &str =
    "Reload CRI-O to use the mirror: systemctl reload crio (or restart it)";
pub(crate) const NEXT_STEP_PODMAN: &str =
    "Podman, skopeo and buildah read the drop-in on their next run; nothing to restart.";

/// The mirror location for one registry.
pub(crate) fn mirror_location(reg: &Registry, mirror: &str) -> String {
    if let Some(own) = &reg.own_mirror {
        return own.clone();
    }
    if reg.host == "docker.io" {
        return mirror.to_string();
    }
    let scheme = if reg.url.starts_with("http://") {
        "http"
    } else {
        "https"
    };
    format!(
        "{mirror}/pollen-registry/{scheme}/{}",
        reg.host.replace(':', "_")
    )
}

fn drop_in(regs: &[Registry], mirror: &str) -> String {
    let mut out = String::from(
        "# Written by `pollen init`: pulls go through the Pollen daemon's mirror first, and\n# straight to the registry when it is unavailable. Owned by Pollen; edits are replaced.\n",
    );
    for r in regs {
        let insecure = r.url.starts_with("http://");
        out.push_str(&format!(
            "\n[[registry]]\nprefix = \"{h}\"\nlocation = \"{h}\"\ninsecure = {insecure}\n\n[[registry.mirror]]\nlocation = \"{m}\"\ninsecure = true\n",
            h = r.host,
            m = mirror_location(r, mirror),
        ));
    }
    out
}

pub(crate) fn plan(
    root: &Path,
    regs: &[Registry],
    mirror: &str,
) -> anyhow::Result<Vec<ConfigFile>> {
    Ok(vec![ConfigFile {
        path: under(root, "/etc/containers/registries.conf.d/50-pollen.conf"),
        content: drop_in(regs, mirror),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_in_names_each_registry_and_its_mirror() {
        let regs = [
            Registry {
                host: "docker.io".into(),
                url: "https://registry-1.docker.io".into(),
                own_mirror: None,
            },
            Registry {
                host: "127.0.0.1:5000".into(),
                url: "http://127.0.0.1:5000".into(),
                own_mirror: None,
            },
            Registry {
                host: "private.example:5000".into(),
                url: "https://private.example:5000".into(),
                own_mirror: Some("127.0.0.1:4002".into()),
            },
        ];
        let t = drop_in(&regs, "127.0.0.1:4001");
        let v: toml::Value = toml::from_str(&t).expect("valid toml");
        let r = v["registry"].as_array().expect("registries");
        assert_eq!(
            r[0]["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:4001")
        );
        assert_eq!(
            r[1]["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:4001/pollen-registry/http/127.0.0.1_5000")
        );
        assert_eq!(r[1]["insecure"].as_bool(), Some(true));
        assert_eq!(
            r[2]["mirror"][0]["location"].as_str(),
            Some("127.0.0.1:4002"),
            "a registry with its own listener is mirrored there, with no namespace"
        );
        assert_eq!(r[2]["insecure"].as_bool(), Some(false));
    }
}
