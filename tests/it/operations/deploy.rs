//! What `deploy/` ships, checked: the Kubernetes manifests against the
//! Kubernetes API schemas (`kubernetes-validate`, strict), the systemd unit
//! with `systemd-analyze verify`, the compose file's shape, the example
//! environment with `assay check-config`, and the Dockerfile's build step
//! against the one CI runs.

use std::path::Path;
use std::process::Command;

use crate::support::{assay_command, peer_available, python_module_available};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn kubernetes_manifests_pass_the_api_schemas() {
    if !python_module_available("kubernetes_validate") {
        return;
    }
    let manifests: Vec<_> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 5, "{manifests:?}");
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "-k", "1.31.0"])
        .args(&manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deployment =
        std::fs::read_to_string(root().join("deploy/kubernetes/deployment.yaml")).unwrap();
    for needed in [
        "path: /readyz",
        "path: /healthz",
        "secretKeyRef",
        "runAsNonRoot: true",
    ] {
        assert!(deployment.contains(needed), "{needed}");
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !peer_available(
        "systemd",
        available,
        "systemd-analyze",
        "apt-get install systemd",
    ) {
        return;
    }
    // The unit as shipped, but starting the binary this build made.
    let unit = std::fs::read_to_string(root().join("deploy/systemd/assay.service"))
        .unwrap()
        .replace("/usr/local/bin/assay", env!("CARGO_BIN_EXE_assay"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assay.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Only what concerns this unit: the host may warn about its own units.
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("assay.service"))
        .collect();
    assert!(out.status.success() && about_unit.is_empty(), "{said}");
}

#[test]
fn the_compose_file_runs_two_replicas_on_postgres() {
    if !python_module_available("yaml") {
        return;
    }
    let check = r#"
import sys, yaml
compose = yaml.safe_load(open(sys.argv[1]))
services = compose["services"]
assert "postgres" in services, "no postgres"
replicas = [s for s in services.values() if s.get("image") == "assay:local"]
assert len(replicas) == 2, replicas
for replica in replicas:
    assert replica["environment"]["ASSAY_DATABASE_URL"].startswith("postgres://")
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
assert replicas[0]["build"]["dockerfile"] == "Dockerfile"
"#;
    let out = Command::new("python3")
        .args(["-c", check])
        .arg(root().join("deploy/docker-compose.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_environment_is_a_valid_configuration() {
    let text = std::fs::read_to_string(root().join("deploy/assay.env.example")).unwrap();
    let mut cmd = assay_command();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((key, value)) = line.split_once('=') {
            cmd.env(key, value);
        }
    }
    let out = cmd.arg("check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // As shipped, it says what to replace before it is used.
    for expected in [
        "webhook secret #1 is a placeholder",
        "ASSAY_ADMIN_TOKEN / admin_token is a placeholder",
        "no alert channel",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from:\n{stderr}"
        );
    }
}

/// The example file and environment, their placeholders filled in as the
/// environment's comment says and a channel set, pass `--strict`.
#[test]
fn the_example_files_pass_strict_once_filled_in() {
    let text = std::fs::read_to_string(root().join("deploy/assay.env.example")).unwrap();
    let mut cmd = assay_command();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some((key, value)) = line.split_once('=') {
            let value = match key {
                "ASSAY_STRIPE_WEBHOOK_SECRET" => "whsec_5f0c2d9a4b7e81c3".to_owned(),
                _ if value.contains("replace") => "3b9f1c7e5a2d8046b1e9c3f7a5d20e84".to_owned(),
                _ => value.to_owned(),
            };
            cmd.env(key, value);
        }
    }
    let out = cmd
        .env("ASSAY_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/alerts")
        .env(
            "ASSAY_ALERT_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        .arg("--config")
        .arg(root().join("deploy/assay.example.toml"))
        .args(["check-config", "--strict"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn the_dockerfile_builds_as_ci_does_and_runs_unprivileged() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("RUN cargo "))
        .collect();
    assert_eq!(builds.len(), 1, "one cargo build step");
    assert!(
        ci.lines()
            .any(|l| l.trim() == format!("cargo {}", builds[0])),
        "CI runs `cargo {}`",
        builds[0]
    );
    assert!(dockerfile.contains("\nUSER 10001\n"));
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("/healthz"));
}
