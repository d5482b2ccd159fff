//! Processes for tests: the `assay` binary run as a user runs it, killed
//! when the test ends.

use reqwest::StatusCode;

use super::peers::http_client;
use super::stripe::{API_KEY, SECRET, now, sign};
use super::wait::wait_for;

/// The `assay` binary, with none of the developer's `ASSAY_*` or `OTEL_*`
/// variables: only what each test sets.
pub fn assay_command() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_assay"));
    for (key, _) in std::env::vars() {
        if key.starts_with("ASSAY_") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `assay serve` on loopback `port` and database `db`, with the test
/// secret, API key and plan map, quiet logs and no output; callers add
/// their own settings, then spawn it.
pub fn serve_command(port: u16, db: &str) -> std::process::Command {
    let mut cmd = assay_command();
    cmd.arg("serve")
        .env("ASSAY_BIND", format!("127.0.0.1:{port}"))
        .env("ASSAY_DATABASE_URL", db)
        .env("ASSAY_STRIPE_WEBHOOK_SECRET", SECRET)
        .env("ASSAY_API_KEY", API_KEY)
        .env("ASSAY_PLAN_MAP", "price_pro=pro")
        .env("ASSAY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// Runs `cmd` with `input` on its standard input; returns what it did.
pub fn run_with_input(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Posts `body`, signed as Stripe would, to project `default` of the Assay
/// at `base` (a process the test started); the error is the transport's.
pub async fn post_signed(
    client: &reqwest::Client,
    base: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/hooks/stripe/default"))
        .header("stripe-signature", sign(body, SECRET, now()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
}

/// Waits until the Assay at `base` (a process the test started) is ready.
pub async fn wait_until_ready(base: &str) {
    let client = http_client();
    wait_for(&format!("Assay at {base} to be ready"), async || {
        let ready = client.get(format!("{base}/readyz")).send().await;
        ready
            .is_ok_and(|r| r.status() == StatusCode::OK)
            .then_some(())
    })
    .await;
}

/// A process the test spawned (an `assay serve`, say), killed with SIGKILL
/// when dropped, so that a failing test leaves nothing running.
pub struct Spawned(pub std::process::Child);

impl Spawned {
    pub fn spawn(cmd: &mut std::process::Command) -> Spawned {
        Spawned(cmd.spawn().unwrap())
    }

    /// SIGKILL, then reap: the process gets no chance to finish anything.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Waits until the Assay it runs answers `/readyz` at `base`; fails at
    /// once, with the exit status, if the process ends first.
    pub async fn wait_ready(&mut self, base: &str) {
        let client = http_client();
        wait_for(&format!("Assay at {base} to be ready"), async || {
            if let Some(exit) = self.0.try_wait().unwrap() {
                panic!("assay serve exited before it was ready: {exit}");
            }
            let ready = client.get(format!("{base}/readyz")).send().await;
            ready
                .is_ok_and(|r| r.status() == StatusCode::OK)
                .then_some(())
        })
        .await;
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free right now, for a process or peer the test names
/// before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
