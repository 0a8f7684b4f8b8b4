//! A real Redis Cluster for tests: six `redis-server` processes (three masters, three replicas)
//! on free 127.0.0.1 ports in a temp dir, joined by `redis-cli --cluster create
//! --cluster-replicas 1`, optionally all over TLS. A master can be killed (its replica is then
//! promoted, after the node timeout of one second) and started again. Every process is killed
//! on drop.

use super::gateway::free_ports;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to form, or to heal after a failover.
const FORM_LIMIT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`: how long a master may be unreachable before its replica takes over.
const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    /// `redis-server` arguments every node gets (a password, say).
    extra: Vec<String>,
    /// For `redis-cli`: the password, if the nodes have one.
    password: Option<String>,
    /// The CA file, when the nodes speak TLS only (clients, replication and the cluster bus).
    tls_ca: Option<PathBuf>,
}

struct Node {
    port: u16,
    bus_port: u16,
    child: Option<Child>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster and waits until every node says `cluster_state:ok`;
    /// panics with the nodes' logs if that does not happen within 30 s.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(None)
    }

    /// Like [`RedisCluster::start`], the nodes requiring `password` (replicas authenticate to
    /// their masters with it too).
    pub fn start_with(password: Option<&str>) -> RedisCluster {
        RedisCluster::start_inner(password, None)
    }

    /// Like [`RedisCluster::start`], every node speaking TLS only, with a certificate for
    /// 127.0.0.1 signed by `ca` (clients need not present one).
    pub fn start_tls(ca: &super::tls::TestCa) -> RedisCluster {
        RedisCluster::start_inner(None, Some(ca))
    }

    fn start_inner(password: Option<&str>, ca: Option<&super::tls::TestCa>) -> RedisCluster {
        let ports = free_ports::<12>();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut extra = Vec::new();
        if let Some(pw) = password {
            extra.extend(["--requirepass", pw, "--masterauth", pw].map(String::from));
        }
        let mut tls_ca = None;
        if let Some(ca) = ca {
            let (cert, key) = ca.leaf(&["127.0.0.1"], 1).write(dir.path(), "node");
            let ca_file = dir.path().join("ca.pem");
            std::fs::write(&ca_file, ca.pem()).expect("write CA");
            for (flag, file) in [
                ("--tls-cert-file", &cert),
                ("--tls-key-file", &key),
                ("--tls-ca-cert-file", &ca_file),
            ] {
                extra.extend([flag.to_string(), file.display().to_string()]);
            }
            extra.extend(
                [
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--tls-auth-clients",
                    "no",
                ]
                .map(String::from),
            );
            tls_ca = Some(ca_file);
        }
        let mut cluster = RedisCluster {
            dir,
            nodes: (0..6)
                .map(|i| Node {
                    port: ports[i],
                    bus_port: ports[6 + i],
                    child: None,
                })
                .collect(),
            extra,
            password: password.map(String::from),
            tls_ca,
        };
        for port in cluster.ports() {
            cluster.start_node(port);
        }
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = Command::new("redis-cli");
        create
            .args(cluster.auth_args())
            .arg("--cluster")
            .arg("create");
        create.args(&addrs);
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = create.output().expect("run redis-cli --cluster create");
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            );
        }
        if !cluster.wait_healthy(FORM_LIMIT) || !cluster.wait_replicas_synced(FORM_LIMIT) {
            panic!("the cluster did not form: {}", cluster.logs());
        }
        cluster
    }

    /// Client ports of the six nodes, the three first masters at creation.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// A `redis+cluster://` URL naming every node as a seed (with the password, if any).
    pub fn url(&self) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|pw| format!(":{pw}@"))
            .unwrap_or_default();
        let seeds: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = match self.tls_ca {
            Some(_) => "rediss+cluster",
            None => "redis+cluster",
        };
        format!("{scheme}://{auth}{}", seeds.join(","))
    }

    /// Runs `redis-cli -p PORT ARGS...` on one node; returns its output (empty if it failed).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(self.auth_args())
            .args(["-p", &port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The ports of the running nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.running()
            .into_iter()
            .filter(|&p| self.cli(p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The running master whose keys match `pattern` (KEYS on each master), if one has any.
    pub fn master_holding(&self, pattern: &str) -> Option<u16> {
        self.masters()
            .into_iter()
            .find(|&p| !self.cli(p, &["KEYS", pattern]).trim().is_empty())
    }

    /// Every key matching `pattern` on the running masters.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .masters()
            .into_iter()
            .flat_map(|p| {
                self.cli(p, &["KEYS", pattern])
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys
    }

    /// Kills one node (as a crash would: SIGKILL) and waits until it is gone.
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every running node says `cluster_state:ok` and sees all 16384 slots served
    /// by running masters; false if that takes longer than `limit` (looked at
    /// once with a zero `limit`).
    pub fn wait_healthy(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let running = self.running();
            let healthy = running.iter().all(|&p| {
                self.cli(p, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
                    && slots_served(&self.cli(p, &["CLUSTER", "NODES"]), &running) == 16384
            });
            if healthy {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until each of the three replicas has a replica role and its link to its master is
    /// up (its first sync done), so that a killed master can be taken over.
    fn wait_replicas_synced(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let synced = self
                .running()
                .iter()
                .filter(|&&p| {
                    let info = self.cli(p, &["INFO", "replication"]);
                    info.contains("role:slave") && info.contains("master_link_status:up")
                })
                .count();
            if synced == 3 {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of every node's log, for a panic message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for node in &self.nodes {
            let log = std::fs::read_to_string(self.log_path(node.port)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            text.push_str(&format!("\n--- node {} ---\n", node.port));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    fn running(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn auth_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(pw) = &self.password {
            args.extend(["--no-auth-warning".into(), "-a".into(), pw.clone()]);
        }
        if let Some(ca) = &self.tls_ca {
            args.extend(["--tls".into(), "--cacert".into(), ca.display().to_string()]);
        }
        args
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    fn node_dir(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("node-{port}"))
    }

    fn log_path(&self, port: u16) -> PathBuf {
        self.node_dir(port).join("redis.log")
    }

    fn start_node(&mut self, port: u16) {
        let dir = self.node_dir(port);
        std::fs::create_dir_all(&dir).expect("node dir");
        let bus_port = self.node_mut(port).bus_port;
        let port_text = port.to_string();
        let port_args = match self.tls_ca {
            Some(_) => vec!["--port", "0", "--tls-port", &port_text],
            None => vec!["--port", &port_text],
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(port_args)
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            // Replicas sync at once (not after the default 5 s), and a replica may take over
            // however long ago it last heard from its master.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(self.log_path(port))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        self.node_mut(port).child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while !self.cli(port, &["PING"]).starts_with("PONG") {
            if Instant::now() >= end {
                panic!(
                    "node {port} did not answer PING: {}",
                    read(&self.log_path(port))
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Slots served, counted from one node's `CLUSTER NODES`: the slot ranges of the masters among
/// the `running` ports that it does not hold as failed.
fn slots_served(nodes: &str, running: &[u16]) -> u64 {
    nodes
        .lines()
        .filter(|l| {
            let mut fields = l.split_whitespace();
            let addr = fields.nth(1).unwrap_or("");
            let flags = fields.next().unwrap_or("");
            let port = addr
                .split('@')
                .next()
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            flags.contains("master")
                && !flags.contains("fail")
                && port.is_some_and(|p| running.contains(&p))
        })
        .flat_map(|l| l.split_whitespace().skip(8).collect::<Vec<_>>())
        .filter(|range| !range.starts_with('['))
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<u64>().unwrap_or(0) + 1 - a.parse::<u64>().unwrap_or(0),
            None => 1,
        })
        .sum()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
