//! A real S3 API server for the object-store origin's tests: `moto` in server mode (PyPI
//! `moto[server]`), in memory, with buckets and objects put by the real `boto3` client. Its
//! access log counts the GETs the origin answered.

use std::path::Path;

use tokio::process::Command;

use crate::logged_server::LoggedServer;
use crate::registry_kit::run;
use crate::tools::Need;

/// The access key and secret the server accepts (moto accepts any).
pub const ACCESS_KEY: (&str, &str) = ("pollen-test", "pollen-test-secret");

/// Whether a test that needs the S3 server runs here: see [`crate::tools`].
pub fn present() -> bool {
    crate::tools::runs(&[
        Need::program(
            "moto_server",
            "python3-pip (then: python3 -m pip install 'moto[server]')",
        ),
        Need::python_module("boto3", "boto3"),
    ])
}

/// A `moto_server` on 127.0.0.1 and a free port, stopped on drop.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    server: LoggedServer,
}

impl S3Server {
    /// Starts a server logging under `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let server = LoggedServer::start(
            "moto_server",
            |port| {
                vec![
                    "-H".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    port.to_string(),
                ]
            },
            dir,
            "moto.log",
        )
        .await?;
        Ok(Self {
            endpoint: format!("http://{}", server.addr),
            server,
        })
    }

    /// For a test: a server logging in a new temporary directory (kept with it), or `None`
    /// where the tools are missing and the test may be skipped (see [`present`]).
    pub async fn for_test() -> Option<(tempfile::TempDir, Self)> {
        if !present() {
            return None;
        }
        let work = tempfile::tempdir().expect("a temporary directory");
        let s3 = Self::start(&work.path().join("moto"))
            .await
            .expect("moto_server starts");
        Some((work, s3))
    }

    /// The environment an S3 client of this server needs (keys, region, endpoint, plain
    /// HTTP allowed): for `boto3`, the `aws` CLI and a daemon's `object_store` alike.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.0),
            ("AWS_SECRET_ACCESS_KEY", ACCESS_KEY.1),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `--origin-s3 KEY=VALUE` daemon flags that read this server with its keys.
    pub fn daemon_flags(&self) -> Vec<String> {
        [
            ("endpoint", self.endpoint.as_str()),
            ("allow_http", "true"),
            ("region", "us-east-1"),
            ("access_key_id", ACCESS_KEY.0),
            ("secret_access_key", ACCESS_KEY.1),
        ]
        .iter()
        .flat_map(|(k, v)| ["--origin-s3".to_string(), format!("{k}={v}")])
        .collect()
    }

    /// Makes `bucket` and puts each `(key, file)` in it with `boto3` (multipart for large
    /// files, as the real client does).
    pub async fn put(&self, bucket: &str, objects: &[(&str, &Path)]) -> anyhow::Result<()> {
        let mut script = String::from(
            "import boto3, sys\ns = boto3.client('s3')\nb = sys.argv[1]\n\
             if b not in [x['Name'] for x in s.list_buckets()['Buckets']]:\n    s.create_bucket(Bucket=b)\n\
             args = sys.argv[2:]\nfor key, path in zip(args[::2], args[1::2]):\n    s.upload_file(path, b, key)\n",
        );
        script.push('\n');
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(script).arg(bucket);
        for (key, path) in objects {
            cmd.arg(key).arg(path);
        }
        cmd.envs(self.env());
        run(&mut cmd).await.map(drop)
    }

    /// GET requests the server answered for `bucket/key` so far (from its access log).
    pub fn gets(&self, bucket: &str, key: &str) -> usize {
        let path = format!("\"GET /{bucket}/{} ", key.replace(' ', "%20"));
        self.server.log_lines_with(&path)
    }
}
