//! A real Azure Blob Storage emulator for the bucket origins' tests: Azurite (npm `azurite`),
//! in memory, with containers and blobs put by the real `azure-storage-blob` Python client.
//! Its access log counts the GETs the origin answered.

use std::path::Path;

use tokio::process::Command;

use crate::logged_server::LoggedServer;
use crate::registry_kit::run;
use crate::tools::Need;

/// The emulator's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's well-known account key (published by Microsoft; not a secret).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Whether a test that needs Azurite runs here: see [`crate::tools`].
pub fn present() -> bool {
    crate::tools::runs(&[
        Need::program("azurite-blob", "npm (then: npm install -g azurite)"),
        Need::python_module("azure.storage.blob", "azure-storage-blob"),
    ])
}

/// An `azurite-blob` on 127.0.0.1 and a free port, stopped on drop.
pub struct Azurite {
    /// The account's blob endpoint: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
    server: LoggedServer,
}

impl Azurite {
    /// Starts the emulator logging under `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let args = |port: u16| {
            ["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()]
                .into_iter()
                .chain(["--inMemoryPersistence", "--skipApiVersionCheck", "--loose"])
                .map(str::to_string)
                .collect()
        };
        let server = LoggedServer::start("azurite-blob", args, dir, "azurite.log").await?;
        Ok(Self {
            endpoint: format!("http://{}/{ACCOUNT}", server.addr),
            server,
        })
    }

    /// Makes `container` and puts each `(name, file)` in it with the Azure client.
    pub async fn put(&self, container: &str, blobs: &[(&str, &Path)]) -> anyhow::Result<()> {
        let script = "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
             s = BlobServiceClient.from_connection_string(sys.argv[1])\n\
             c = s.get_container_client(sys.argv[2])\n\
             c.exists() or c.create_container()\n\
             args = sys.argv[3:]\n\
             for name, path in zip(args[::2], args[1::2]):\n    \
             with open(path, 'rb') as f:\n        c.upload_blob(name, f, overwrite=True)\n";
        let conn = format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={};",
            self.endpoint
        );
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(script).arg(conn).arg(container);
        for (name, path) in blobs {
            cmd.arg(name).arg(path);
        }
        run(&mut cmd).await.map(drop)
    }

    /// The settings a daemon's `origin_azure` needs to read from the emulator.
    pub fn settings(&self) -> Vec<(String, String)> {
        [
            ("account_name", ACCOUNT),
            ("access_key", ACCOUNT_KEY),
            ("endpoint", &self.endpoint),
            ("allow_http", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// GET requests the emulator answered for `container/name` so far (from its access log).
    pub fn gets(&self, container: &str, name: &str) -> usize {
        let path = format!("\"GET /{ACCOUNT}/{container}/{} ", name.replace(' ', "%20"));
        self.server.log_lines_with(&path)
    }
}
