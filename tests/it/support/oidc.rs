//! A real OpenID provider for the single sign-on tests: the npm package
//! `oidc-provider`, run by `tests/oidc/provider.mjs` on a loopback port
//! (installed with `npm ci --prefix tests/oidc`).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::peers::peer_available;

pub struct OidcProvider {
    pub issuer: String,
    child: Child,
    /// Its standard error, shown if the test fails.
    log: tempfile::NamedTempFile,
    /// Kept open: a closed pipe would fail the provider's next write.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

fn provider_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether the provider can run here: Node.js and the installed package.
/// A missing one fails the test unless the run opts out (`ASSAY_TEST_SKIP=oidc`).
pub fn oidc_provider_available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let installed = provider_dir()
        .join("node_modules/oidc-provider/package.json")
        .exists();
    peer_available(
        "oidc",
        node && installed,
        "Node.js with the npm package oidc-provider",
        "npm ci --prefix tests/oidc",
    )
}

impl OidcProvider {
    /// Starts the provider with Assay's client and the accounts that may
    /// sign in (see provider.mjs); returns once it listens.
    pub async fn start(settings: &Value) -> OidcProvider {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg(provider_dir().join("provider.mjs"))
            .arg(settings.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        let (line, stdout) = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                let mut stdout = std::io::BufReader::new(stdout);
                stdout.read_line(&mut line).map(|_| (line, stdout))
            }),
        )
        .await
        .expect("the OpenID provider started within 30 s")
        .unwrap()
        .unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the provider printed {line:?}: {e}"));
        OidcProvider {
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            child,
            log,
            _stdout: stdout,
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            eprintln!("the OpenID provider's log:\n{log}");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
