//! One module per subcommand.

pub(crate) mod ca;
pub(crate) mod cache;
pub(crate) mod certs;
pub(crate) mod daemon;
pub(crate) mod daemon_client;
pub(crate) mod demo;
pub(crate) mod get;
pub(crate) mod get_dir;
pub(crate) mod init;
pub(crate) mod manager;
pub(crate) mod metrics_listener;
pub(crate) mod preheat;
pub(crate) mod scheduler;
pub(crate) mod standalone;
pub(crate) mod status;
pub(crate) mod tls_args;

/// Reads a role's TOML config file, or its defaults when none is given.
pub(crate) fn load_config<T: serde::de::DeserializeOwned + Default>(
    path: Option<&std::path::Path>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
}
