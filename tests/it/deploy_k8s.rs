//! The Kubernetes manifests in `deploy/k8s` agree with Tollgate: the probes reach the admin
//! listener the ConfigMap's config opens, the grace period outlasts the preStop sleep plus
//! `shutdown_grace`, the pod runs non-root on a read-only root, the config is mounted as a
//! directory (so updates reach it), and that config passes `tollgate check`. The schemas
//! themselves are checked by kubernetes-validate in `.ci/run`.

use serde::Deserialize;
use serde_yaml::Value;
use std::path::PathBuf;
use std::time::Duration;

fn k8s_dir() -> PathBuf {
    super::deploy::deploy_dir().join("k8s")
}

/// Every document of every file the kustomization lists, with the file's name.
fn resources() -> Vec<(String, Value)> {
    let kustomization: Value = serde_yaml::from_str(
        &std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(kustomization["kind"], "Kustomization");
    let mut out = Vec::new();
    for file in kustomization["resources"].as_sequence().expect("resources") {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(k8s_dir().join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            out.push((file.to_string(), Value::deserialize(doc).unwrap()));
        }
    }
    out
}

fn one<'a>(all: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<_> = all.iter().filter(|(_, v)| v["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} wanted");
    &found[0].1
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The container port a probe or Service names (by name or number).
fn container_port(container: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap(),
        other => panic!("port {other:?}"),
    }
}

fn bytes(quantity: &str) -> u64 {
    let (n, unit) = quantity.split_at(quantity.find(|c: char| c.is_alphabetic()).unwrap());
    let mult = match unit {
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        other => panic!("unit {other}"),
    };
    n.parse::<u64>().unwrap() * mult
}

#[test]
fn the_manifests_fit_the_gateway_they_run() {
    let all = resources();
    let kinds: Vec<(&str, &str)> = all
        .iter()
        .map(|(_, v)| {
            (
                v["kind"].as_str().unwrap(),
                v["apiVersion"].as_str().unwrap(),
            )
        })
        .collect();
    for wanted in [
        ("ConfigMap", "v1"),
        ("Deployment", "apps/v1"),
        ("Service", "v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("HorizontalPodAutoscaler", "autoscaling/v2"),
    ] {
        assert!(kinds.contains(&wanted), "{wanted:?} missing from {kinds:?}");
    }

    let config_map = one(&all, "ConfigMap");
    let toml_text = config_map["data"]["tollgate.toml"]
        .as_str()
        .expect("tollgate.toml");
    let config: toml::Table = toml::from_str(toml_text).unwrap();
    let server = config["server"].as_table().unwrap();
    let admin_port = port_of(server["admin_listen"].as_str().unwrap());
    let listen_port = port_of(server["listen"].as_array().unwrap()[0].as_str().unwrap());
    let grace = humantime::parse_duration(server["shutdown_grace"].as_str().unwrap()).unwrap();
    let cache = bytes(server["cache_capacity"].as_str().unwrap());

    let deployment = one(&all, "Deployment");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], *labels);
    let spec = &pod["spec"];
    let containers = spec["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // Probes on the admin listener's port, at the paths Tollgate answers.
    let readiness = &c["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/readyz");
    assert_eq!(container_port(c, &readiness["port"]), admin_port);
    let liveness = &c["livenessProbe"]["httpGet"];
    assert_eq!(liveness["path"], "/healthz");
    assert_eq!(container_port(c, &liveness["port"]), admin_port);
    assert!(
        !server["admin_listen"].as_str().unwrap().starts_with("127."),
        "the kubelet probes the pod's address: a loopback admin listener is unreachable"
    );

    // preStop sleep + shutdown_grace fit in the grace period, with a margin.
    let command: Vec<&str> = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("preStop exec command")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(command[0].ends_with("sleep"), "{command:?}");
    let pre_stop = Duration::from_secs(command[1].parse().unwrap());
    let termination = Duration::from_secs(spec["terminationGracePeriodSeconds"].as_u64().unwrap());
    assert!(
        termination > pre_stop + grace,
        "terminationGracePeriodSeconds {termination:?} must exceed preStop {pre_stop:?} + shutdown_grace {grace:?}"
    );

    // Non-root, read-only root, nothing to escalate to.
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_ne!(spec["securityContext"]["runAsUser"], 0);
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");

    // Requests and limits; the memory limit holds the whole response cache and more.
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][kind][r].is_string(), "resources.{kind}.{r}");
        }
    }
    let memory_limit = bytes(c["resources"]["limits"]["memory"].as_str().unwrap());
    assert!(
        memory_limit >= 2 * cache,
        "memory limit {memory_limit} vs cache_capacity {cache}"
    );

    // The config comes from the ConfigMap, mounted as the directory `-c` reads from, never
    // through subPath (a subPath mount never sees the kubelet's updates).
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let config_path = PathBuf::from(args[args.iter().position(|a| *a == "-c").unwrap() + 1]);
    let volume = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    assert_eq!(
        Some(PathBuf::from(mount["mountPath"].as_str().unwrap()).as_path()),
        config_path.parent()
    );
    assert!(
        mount["subPath"].is_null(),
        "subPath mounts are never updated"
    );
    assert!(config_map["data"][config_path.file_name().unwrap().to_str().unwrap()].is_string());

    // The Service sends traffic to the listen port of pods of this Deployment.
    let service = one(&all, "Service");
    assert_eq!(&service["spec"]["selector"], labels);
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert_eq!(container_port(c, target), listen_port);

    // The budget and the autoscaler name these pods, and never scale below two.
    let pdb = one(&all, "PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let hpa = one(&all, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
}

#[test]
fn the_config_map_config_passes_tollgate_check() {
    let all = resources();
    let text = one(&all, "ConfigMap")["data"]["tollgate.toml"]
        .as_str()
        .unwrap()
        .to_string();
    // Cluster DNS names only resolve inside a cluster (the config resolves target names when
    // it loads): stand in loopback for them, keep everything else as shipped.
    let mut checked = String::new();
    for line in text.lines() {
        let line = match line.find(".svc.cluster.local:") {
            Some(end) => {
                let start = line[..end].rfind('"').unwrap() + 1;
                format!(
                    "{}127.0.0.1{}",
                    &line[..start],
                    &line[end + ".svc.cluster.local".len()..]
                )
            }
            None => line.to_string(),
        };
        checked.push_str(&line);
        checked.push('\n');
    }
    assert!(!checked.contains("cluster.local"), "{checked}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, &checked).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{checked}");
    assert!(stdout.contains("ok (1 route, 1 upstream)"), "{stdout}");
    // The only warning: the admin listener on the pod's address, as intended.
    for line in stderr.lines() {
        assert!(line.contains("server.admin_listen"), "unexpected: {line}");
    }
}
