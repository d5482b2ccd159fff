//! Peers for tests: HTTP servers on loopback playing an app or a receiver,
//! and the check that a test's real peer is here (or that the run opts
//! out of it by name, `ASSAY_TEST_SKIP`).

/// An HTTP client for talking to Assay and to the test's peers.
pub fn http_client() -> reqwest::Client {
    assay::install_crypto_provider();
    reqwest::Client::new()
}

/// Whether python3 can import `module` (a peer from tests/requirements.txt).
/// A missing module fails the test, unless the run opts out of it by name
/// (`ASSAY_TEST_SKIP=stripe`, say) or of every Python peer (`python`).
pub fn python_module_available(module: &str) -> bool {
    if opted_out("python") {
        eprintln!(
            "NOTICE: skipping a test that needs python3's `{module}`: ASSAY_TEST_SKIP names python"
        );
        return false;
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    peer_available(
        module,
        ok,
        &format!("python3's `{module}`"),
        "python3 -m pip install -r tests/requirements.txt",
    )
}

/// Whether the run opts out of the tests that need `peer`: the
/// comma-separated `ASSAY_TEST_SKIP` names it.
pub fn opted_out(peer: &str) -> bool {
    std::env::var("ASSAY_TEST_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|name| name.trim() == peer)
}

/// Whether the test that needs `peer` (`what`, installed by `install`)
/// runs. A run that opts out of it (`ASSAY_TEST_SKIP`) skips the test with
/// a notice; otherwise a missing peer fails the test, so that nothing
/// passes for work it skipped.
pub fn peer_available(peer: &str, ok: bool, what: &str, install: &str) -> bool {
    if opted_out(peer) {
        eprintln!("NOTICE: skipping a test that needs {what}: ASSAY_TEST_SKIP names {peer}");
        return false;
    }
    assert!(
        ok,
        "this test needs {what}: {install}; or opt out with ASSAY_TEST_SKIP={peer}"
    );
    true
}

/// A peer (a fake app, a receiver) served on an ephemeral loopback port;
/// stopped when dropped.
pub struct Peer {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    pub async fn serve(router: axum::Router) -> Peer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Peer::serve_on(listener, router)
    }

    /// Serves on a listener the test bound (a port named in advance).
    pub fn serve_on(listener: tokio::net::TcpListener, router: axum::Router) -> Peer {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Peer { addr, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
