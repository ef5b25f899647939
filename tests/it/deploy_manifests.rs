//! The container and orchestration files: the Kubernetes kustomize base and its S3
//! overlay render (`kubectl kustomize`) and validate offline against the Kubernetes
//! schemas (`kubernetes-validate --strict`), and their parts refer to each other
//! correctly; the compose file passes `docker-compose config`; the Containerfile passes
//! our lint; the image's entrypoint maps PGPLATFORM__* variables to a config the real
//! agent starts with. No container engine here can pull base images (no registry is
//! reachable), so the image itself is not built here, and nothing runs on a cluster.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::deploy_systemd::{deploy, http_status, UnitProcess};
use crate::support::ports::{free_port, Ports};
use crate::support::{command, run, stderr_of, stdout_of, try_wait_for, BIN, COMMAND_TIMEOUT};

fn have(program: &str) -> bool {
    run(
        command("sh").args(["-c", &format!("command -v {program}")]),
        COMMAND_TIMEOUT,
    )
    .status
    .success()
}

/// Cross-references in rendered manifests that the schemas cannot see.
const CROSS_CHECK: &str = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
sts = kinds[("StatefulSet", "pgplatform")]
pod = sts["spec"]["template"]
labels = pod["metadata"]["labels"]
container = pod["spec"]["containers"][0]
ports = {p["name"] for p in container["ports"]}
def selects(selector): return all(labels.get(k) == v for k, v in selector.items())
for name in ("pgplatform-rw", "pgplatform-ro", "pgplatform-members"):
    svc = kinds[("Service", name)]
    assert selects(svc["spec"]["selector"]), name + " selects no pgplatform pod"
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        assert target in ports or any(c.get("containerPort") == target for c in container["ports"]), (name, target)
assert sts["spec"]["serviceName"] == "pgplatform-members"
assert sts["spec"]["replicas"] == 3
assert container["readinessProbe"]["httpGet"]["path"] == "/readiness"
anti = pod["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
assert selects(anti["labelSelector"]["matchLabels"]) and anti["topologyKey"] == "kubernetes.io/hostname"
assert selects(kinds[("PodDisruptionBudget", "pgplatform")]["spec"]["selector"]["matchLabels"])
monitor = kinds[("ServiceMonitor", "pgplatform")]
scraped = [s for s in docs if s["kind"] == "Service" and all(
    s["metadata"].get("labels", {}).get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())]
assert scraped, "the ServiceMonitor selects no Service"
assert any(p["name"] == monitor["spec"]["endpoints"][0]["port"] for s in scraped for p in s["spec"]["ports"])
env = {e["name"]: e for e in container["env"]}
mounts = {v["name"] for v in pod["spec"]["volumes"]}
for m in container["volumeMounts"]:
    assert m["name"] in mounts or m["name"] in {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}, m
secret = env["PGPLATFORM__HA__SECRET_FILE"]["value"]
assert any(secret.startswith(m["mountPath"] + "/") for m in container["volumeMounts"]), secret
etcd = kinds[("StatefulSet", "etcd")]
assert etcd["spec"]["replicas"] == 3
print("|".join(sorted(env)))
"#;

#[test]
fn kubernetes_base_and_overlay_render_and_validate_against_the_schemas() {
    for tool in ["kubectl", "kubernetes-validate", "python3"] {
        if !have(tool) {
            crate::support::skip(&format!("{tool} is not installed"));
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, kustomization) in [
        ("base", "kubernetes/base"),
        ("s3", "kubernetes/overlays/s3-backups"),
    ] {
        let out = run(
            command("kubectl")
                .arg("kustomize")
                .arg(deploy(kustomization)),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "kustomize {name}: {}",
            stderr_of(&out)
        );
        let rendered = dir.path().join(format!("{name}.yaml"));
        fs::write(&rendered, &out.stdout).unwrap();

        let out = run(
            command("kubernetes-validate")
                .args(["--strict", "--quiet"])
                .arg(&rendered),
            COMMAND_TIMEOUT,
        );
        let said = format!("{}{}", stdout_of(&out), stderr_of(&out));
        assert!(out.status.success(), "kubernetes-validate {name}: {said}");
        // The one kind without a schema here is the Prometheus Operator's CRD.
        for line in said.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.contains("Couldn't find schema for kind ServiceMonitor"),
                "kubernetes-validate {name}: {line}"
            );
        }

        let out = run(
            command("python3").args(["-c", CROSS_CHECK]).arg(&rendered),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "cross-check {name}: {}",
            stderr_of(&out)
        );
        let env = stdout_of(&out);
        let backups = env.contains("PGPLATFORM__BACKUP__REPOSITORY");
        assert_eq!(backups, name == "s3", "{name}: env {env}");
    }
}

#[test]
fn compose_file_passes_docker_compose_config() {
    if !have("docker-compose") {
        crate::support::skip("docker-compose (Debian package) is not installed");
        return;
    }
    let compose = deploy("compose/compose.yaml");
    let out = run(
        command("docker-compose")
            .arg("-f")
            .arg(&compose)
            .args(["config", "--services"]),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mut services: Vec<String> = stdout_of(&out).lines().map(str::to_owned).collect();
    services.sort();
    assert_eq!(
        services,
        ["app", "create-tenant", "pgplatform", "prometheus"]
    );
    // Every file the compose file mounts or builds from exists.
    let text = fs::read_to_string(&compose).unwrap();
    for relative in ["./prometheus.yml", "../prometheus/alerts.yml"] {
        assert!(text.contains(relative));
        assert!(deploy("compose").join(relative).exists(), "{relative}");
    }
}

/// A lint of the Containerfile for what the issue and the image's users rely on.
#[test]
fn containerfile_lint() {
    let text = fs::read_to_string(deploy("container/Containerfile")).unwrap();
    let instructions: Vec<(String, String)> = text
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_uppercase(), rest.trim().to_owned())
        })
        .collect();
    let known = [
        "FROM",
        "RUN",
        "COPY",
        "ENV",
        "ARG",
        "WORKDIR",
        "USER",
        "VOLUME",
        "EXPOSE",
        "HEALTHCHECK",
        "ENTRYPOINT",
        "CMD",
        "STOPSIGNAL",
        "LABEL",
    ];
    for (op, _) in &instructions {
        assert!(known.contains(&op.as_str()), "unknown instruction {op}");
    }
    let froms: Vec<usize> = (0..instructions.len())
        .filter(|&i| instructions[i].0 == "FROM")
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {} FROM", froms.len());
    let last = &instructions[*froms.last().unwrap()..];
    let get = |op: &str| -> Vec<String> {
        last.iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let users = get("USER");
    let user = users.last().expect("the final stage sets USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    assert!(get("HEALTHCHECK").iter().any(|h| h.contains("/health")));
    assert!(get("VOLUME")
        .iter()
        .any(|v| v.contains("/var/lib/pgplatform")));
    assert!(
        get("ENTRYPOINT").iter().any(|e| e.starts_with('[')),
        "exec-form ENTRYPOINT"
    );
    assert!(
        get("RUN").iter().any(|r| r.contains("pgvector")),
        "pgvector installed"
    );
    // Every COPY from the build context names a file in this repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (op, rest) in &instructions {
        if op != "COPY" || rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(root.join(source).exists(), "COPY {source}: no such file");
        }
    }
}

#[test]
fn container_entrypoint_maps_environment_variables_and_starts_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ports = Ports::pick();
    let metrics = free_port();
    let generated = dir.path().join("run-config.toml");
    let env = [
        ("PGPLATFORM_BIN", BIN.to_owned()),
        (
            "PGPLATFORM_GENERATED_CONFIG",
            generated.display().to_string(),
        ),
        (
            "PGPLATFORM__DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        (
            "PGPLATFORM__POSTGRES__LISTEN_ADDRESSES",
            "127.0.0.1".to_owned(),
        ),
        ("PGPLATFORM__POSTGRES__PORT", ports.postgres.to_string()),
        (
            "PGPLATFORM__POSTGRES__PARAMETERS__SHARED_BUFFERS",
            "32MB".to_owned(),
        ),
        ("PGPLATFORM__POSTGRES__PARAMETERS__FSYNC", "off".to_owned()),
        (
            "PGPLATFORM__API__LISTEN",
            format!("127.0.0.1:{}", ports.api),
        ),
        ("PGPLATFORM__POOLER__LISTEN_ADDR", "127.0.0.1".to_owned()),
        ("PGPLATFORM__POOLER__LISTEN_PORT", ports.pooler.to_string()),
        (
            "PGPLATFORM__METRICS__LISTEN",
            format!("127.0.0.1:{metrics}"),
        ),
        ("PGPLATFORM__TENANTS__HOST", "db.internal".to_owned()),
        ("PGPLATFORM__BACKUP__SCHEDULE", "0 3 * * *".to_owned()),
    ];
    let mut agent = UnitProcess::start_with_env(
        &deploy("container/entrypoint.sh"),
        &["up".to_owned()],
        &env,
        dir.path().join("agent.log"),
    );
    let api = format!("127.0.0.1:{}", ports.api);
    let up = try_wait_for(Duration::from_secs(90), || {
        (agent.exited() || http_status(&api, "/health") == Some(200)).then_some(())
    });
    assert!(
        up.is_some() && !agent.exited(),
        "not healthy: {}",
        agent.log_text()
    );
    assert_eq!(
        http_status(&format!("127.0.0.1:{metrics}"), "/metrics"),
        Some(200)
    );
    let config: toml::Table = toml::from_str(&fs::read_to_string(&generated).unwrap()).unwrap();
    assert_eq!(
        config["postgres"]["port"].as_integer(),
        Some(ports.postgres.into())
    );
    assert_eq!(
        config["postgres"]["parameters"]["fsync"].as_str(),
        Some("off")
    );
    assert_eq!(config["tenants"]["host"].as_str(), Some("db.internal"));
    assert_eq!(config["backup"]["schedule"].as_str(), Some("0 3 * * *"));
    assert_eq!(config["log"]["format"].as_str(), Some("json"));
    assert!(agent.stop(), "clean stop");
}

/// Quotes and backslashes survive into TOML strings; numbers, booleans and arrays stay bare.
#[test]
fn container_entrypoint_quotes_values() {
    let out = run(
        command(deploy("container/entrypoint.sh"))
            .arg("--print-config")
            .env("PGPLATFORM__BACKUP__S3__PREFIX", r#"a "b" \c"#)
            .env(
                "PGPLATFORM__HA__ETCD",
                r#"["http://e1:2379", "http://e2:2379"]"#,
            )
            .env("PGPLATFORM__POOLER__ENABLED", "false")
            .env("PGPLATFORM__API__MAX_CONNECTIONS", "100"),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let config: toml::Table = toml::from_str(&stdout_of(&out)).unwrap();
    assert_eq!(
        config["backup"]["s3"]["prefix"].as_str(),
        Some(r#"a "b" \c"#)
    );
    assert_eq!(config["ha"]["etcd"].as_array().map(Vec::len), Some(2));
    assert_eq!(config["pooler"]["enabled"].as_bool(), Some(false));
    assert_eq!(config["api"]["max_connections"].as_integer(), Some(100));
    assert_eq!(config["data_dir"].as_str(), Some("/var/lib/pgplatform"));
}
