//! Plugin-chain tests against fake plugins: shell scripts in a temp dir that
//! record their stdin and `CNI_*` environment and print a canned result.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::{Cni, CniError, CniResult, CniVersion, NetworkConfigList, RuntimeConf};

/// How a fake plugin fails, and on which command.
enum Failure {
    /// Prints a CNI error object and exits 1.
    ErrorJson { code: u32, msg: &'static str },
    /// Prints to stderr and exits 2.
    Stderr(&'static str),
    /// Prints something that is not a result and exits 0.
    Garbage,
    /// Sleeps far longer than any test timeout.
    Hang,
}

struct FakePlugin {
    name: &'static str,
    /// Printed on ADD.
    result: Value,
    fail_on: Option<(&'static str, Failure)>,
}

impl FakePlugin {
    fn ok(name: &'static str, result: Value) -> Self {
        FakePlugin {
            name,
            result,
            fail_on: None,
        }
    }

    fn failing(name: &'static str, command: &'static str, failure: Failure) -> Self {
        FakePlugin {
            name,
            result: json!({}),
            fail_on: Some((command, failure)),
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(plugins: Vec<FakePlugin>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Fixture { dir };
        for sub in ["bin-empty", "bin", "log", "cache", "netns"] {
            std::fs::create_dir(fixture.path(sub)).expect("mkdir");
        }
        std::fs::write(fixture.netns(), "").expect("fake netns file");
        for plugin in plugins {
            fixture.install(plugin);
        }
        fixture
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn netns(&self) -> PathBuf {
        self.path("netns").join("pod1")
    }

    fn install(&self, plugin: FakePlugin) {
        let log = self.path("log");
        let failure = match &plugin.fail_on {
            None => String::new(),
            Some((command, failure)) => {
                let action = match failure {
                    Failure::ErrorJson { code, msg } => format!(
                        "echo '{}'; exit 1",
                        json!({"cniVersion":"1.0.0","code":code,"msg":msg,"details":"some details"})
                    ),
                    Failure::Stderr(text) => format!("echo '{text}' >&2; exit 2"),
                    Failure::Garbage => "echo 'this is not json'; exit 0".to_owned(),
                    Failure::Hang => "exec sleep 60".to_owned(),
                };
                format!("if [ \"$CNI_COMMAND\" = {command} ]; then {action}; fi\n")
            }
        };
        let script = format!(
            "#!/bin/sh\n\
             log='{log}'\n\
             echo \"$CNI_COMMAND {name}\" >> \"$log/calls\"\n\
             cat > \"$log/{name}.$CNI_COMMAND.stdin\"\n\
             env | grep '^CNI_' | sort > \"$log/{name}.$CNI_COMMAND.env\"\n\
             {failure}\
             if [ \"$CNI_COMMAND\" = ADD ]; then echo '{result}'; fi\n\
             exit 0\n",
            log = log.display(),
            name = plugin.name,
            result = plugin.result,
        );
        let path = self.path("bin").join(plugin.name);
        std::fs::write(&path, script).expect("write plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn cni(&self) -> Cni {
        Cni::new(
            vec![self.path("bin-empty"), self.path("bin")],
            self.path("cache"),
        )
    }

    fn runtime(&self) -> RuntimeConf {
        RuntimeConf {
            container_id: "pod1abc".into(),
            netns_path: self.netns(),
            if_name: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), "web".into()),
            ],
            capability_args: object(json!({
                "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
                "bandwidth": {"ingressRate": 1000, "ingressBurst": 100},
                "dns": {"servers": ["10.96.0.10"]}
            })),
        }
    }

    /// The calls made so far, as "COMMAND plugin".
    fn calls(&self) -> Vec<String> {
        match std::fs::read_to_string(self.path("log").join("calls")) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn stdin(&self, plugin: &str, command: &str) -> Value {
        let path = self.path("log").join(format!("{plugin}.{command}.stdin"));
        let bytes = std::fs::read(&path).expect("plugin stdin recorded");
        serde_json::from_slice(&bytes).expect("plugin stdin is JSON")
    }

    fn env(&self, plugin: &str, command: &str) -> Map<String, Value> {
        let path = self.path("log").join(format!("{plugin}.{command}.env"));
        let text = std::fs::read_to_string(path).expect("plugin env recorded");
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect()
    }

    fn cache_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("cache").join("results")) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn bridge_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "0a:00:00:00:00:01"},
            {"name": "veth9", "mac": "0a:00:00:00:00:02"},
            {"name": "eth0", "mac": "0a:00:00:00:00:03", "sandbox": "/run/netns/pod1"}
        ],
        "ips": [{"address": "10.22.0.7/24", "gateway": "10.22.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}]
    })
}

fn with_marker(mut result: Value, marker: &str) -> Value {
    result[marker] = json!(true);
    result
}

/// bridge → portmap (portMappings) → bandwidth (bandwidth; dns disabled).
fn three_plugin_list(version: &str) -> NetworkConfigList {
    let list = json!({
        "cniVersion": version,
        "name": "testnet",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            {"type": "bandwidth", "capabilities": {"bandwidth": true, "dns": false}}
        ]
    });
    NetworkConfigList::from_conflist_bytes(list.to_string().as_bytes()).expect("parse list")
}

/// A list of one bridge plugin, `name`, at `version`.
fn bridge_list(version: &str, name: &str) -> NetworkConfigList {
    let config = json!({"cniVersion": version, "name": name, "type": "bridge"});
    NetworkConfigList::from_plugin_bytes(config.to_string().as_bytes()).expect("parse")
}

/// ADD of `net`, which must fail.
fn add_fails(fx: &Fixture, net: &NetworkConfigList) -> CniError {
    fx.cni().add(net, &fx.runtime()).expect_err("add must fail")
}

/// The three plugins, portmap's DEL failing with CNI error `code` and `msg`.
fn portmap_del_failing(code: u32, msg: &'static str) -> Vec<FakePlugin> {
    vec![
        FakePlugin::ok("bridge", bridge_result()),
        FakePlugin::failing("portmap", "DEL", Failure::ErrorJson { code, msg }),
        FakePlugin::ok("bandwidth", bridge_result()),
    ]
}

fn three_plugins() -> Vec<FakePlugin> {
    vec![
        FakePlugin::ok("bridge", bridge_result()),
        FakePlugin::ok("portmap", with_marker(bridge_result(), "portmapped")),
        FakePlugin::ok("bandwidth", with_marker(bridge_result(), "shaped")),
    ]
}

#[test]
fn add_chains_prev_results_and_filters_runtime_config() {
    let fx = Fixture::new(three_plugins());
    let result = fx
        .cni()
        .add(&three_plugin_list("1.0.0"), &fx.runtime())
        .expect("add");

    assert_eq!(fx.calls(), ["ADD bridge", "ADD portmap", "ADD bandwidth"]);

    let bridge = fx.stdin("bridge", "ADD");
    assert_eq!(bridge["name"], json!("testnet"));
    assert_eq!(bridge["cniVersion"], json!("1.0.0"));
    assert_eq!(bridge["bridge"], json!("cni0"));
    assert!(bridge.get("prevResult").is_none());
    assert!(bridge.get("runtimeConfig").is_none());

    let portmap = fx.stdin("portmap", "ADD");
    assert_eq!(portmap["name"], json!("testnet"));
    assert_eq!(portmap["prevResult"], bridge_result());
    assert_eq!(
        portmap["runtimeConfig"],
        json!({"portMappings": fx.runtime().capability_args["portMappings"]})
    );

    let bandwidth = fx.stdin("bandwidth", "ADD");
    assert_eq!(
        bandwidth["prevResult"],
        with_marker(bridge_result(), "portmapped")
    );
    assert_eq!(
        bandwidth["runtimeConfig"],
        json!({"bandwidth": {"ingressRate": 1000, "ingressBurst": 100}})
    );

    assert_eq!(
        serde_json::to_value(&result).expect("json"),
        with_marker(bridge_result(), "shaped")
    );
    assert_eq!(
        result.ips(),
        vec!["10.22.0.7".parse::<std::net::IpAddr>().expect("ip")]
    );
}

#[test]
fn add_passes_cni_environment() {
    let fx = Fixture::new(three_plugins());
    fx.cni()
        .add(&three_plugin_list("1.0.0"), &fx.runtime())
        .expect("add");
    let env = fx.env("portmap", "ADD");
    let cni_path = format!(
        "{}:{}",
        fx.path("bin-empty").display(),
        fx.path("bin").display()
    );
    let expected = json!({
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "pod1abc",
        "CNI_NETNS": fx.netns().display().to_string(),
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web",
        "CNI_PATH": cni_path,
    });
    assert_eq!(Value::Object(env), expected);
}

#[test]
fn add_caches_result_and_del_runs_in_reverse_with_it_then_removes_it() {
    let fx = Fixture::new(three_plugins());
    let net = three_plugin_list("1.0.0");
    let rt = fx.runtime();
    let result = fx.cni().add(&net, &rt).expect("add");
    assert_eq!(fx.cache_files(), ["testnet:pod1abc:eth0"]);

    // A new client (as after a runtime restart) sees the cached attachment.
    let restarted = fx.cni();
    let cached = restarted
        .cached_result("testnet", "pod1abc", "eth0")
        .expect("read cache");
    assert_eq!(cached.as_ref(), Some(&result));
    let attachment = restarted
        .cached_attachment("testnet", "pod1abc", "eth0")
        .expect("read cache")
        .expect("cached");
    assert_eq!(attachment.network, net);
    assert_eq!(attachment.runtime, rt);

    restarted.del(&net, &rt).expect("del");
    assert_eq!(
        fx.calls()[3..],
        ["DEL bandwidth", "DEL portmap", "DEL bridge"]
    );
    let expected_prev = serde_json::to_value(&result).expect("json");
    for plugin in ["bandwidth", "portmap", "bridge"] {
        let stdin = fx.stdin(plugin, "DEL");
        assert_eq!(stdin["prevResult"], expected_prev, "{plugin}");
        assert_eq!(stdin["name"], json!("testnet"));
    }
    assert_eq!(
        fx.stdin("portmap", "DEL")["runtimeConfig"]["portMappings"],
        rt.capability_args["portMappings"]
    );
    assert_eq!(fx.env("bridge", "DEL")["CNI_COMMAND"], json!("DEL"));
    assert!(fx.cache_files().is_empty());
    assert_eq!(
        restarted
            .cached_result("testnet", "pod1abc", "eth0")
            .expect("read cache"),
        None
    );
}

#[test]
fn del_without_cache_runs_without_prev_result() {
    let fx = Fixture::new(three_plugins());
    fx.cni()
        .del(&three_plugin_list("1.0.0"), &fx.runtime())
        .expect("del");
    assert_eq!(fx.calls(), ["DEL bandwidth", "DEL portmap", "DEL bridge"]);
    assert!(fx.stdin("bridge", "DEL").get("prevResult").is_none());
}

#[test]
fn del_on_0_3_1_network_passes_no_prev_result() {
    let fx = Fixture::new(vec![FakePlugin::ok(
        "bridge",
        json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.0.2/24"}]}),
    )]);
    let net = bridge_list("0.3.1", "old");
    let cni = fx.cni();
    let result = cni.add(&net, &fx.runtime()).expect("add");
    assert_eq!(result.cni_version, CniVersion::V0_3_1);
    cni.del(&net, &fx.runtime()).expect("del");
    assert!(fx.stdin("bridge", "DEL").get("prevResult").is_none());
    assert!(fx.cache_files().is_empty());
}

#[test]
fn del_converts_cached_result_to_network_version() {
    let fx = Fixture::new(vec![FakePlugin::ok(
        "bridge",
        json!({"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.2/24"}]}),
    )]);
    let net = bridge_list("1.0.0", "n");
    let cni = fx.cni();
    cni.add(&net, &fx.runtime()).expect("add");
    cni.del(&net, &fx.runtime()).expect("del");
    assert_eq!(
        fx.stdin("bridge", "DEL")["prevResult"],
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24"}]})
    );
}

#[test]
fn failed_add_rolls_back_the_whole_list_and_names_the_plugin() {
    let fx = Fixture::new(vec![
        FakePlugin::ok("bridge", bridge_result()),
        FakePlugin::failing(
            "portmap",
            "ADD",
            Failure::ErrorJson {
                code: 7,
                msg: "no iptables",
            },
        ),
        FakePlugin::ok("bandwidth", bridge_result()),
    ]);
    let err = fx
        .cni()
        .add(&three_plugin_list("1.0.0"), &fx.runtime())
        .expect_err("add must fail");
    match &err {
        CniError::Plugin {
            plugin_type,
            code,
            msg,
            details,
            command,
            network,
        } => {
            assert_eq!(plugin_type, "portmap");
            assert_eq!(*code, 7);
            assert_eq!(msg, "no iptables");
            assert_eq!(details, "some details");
            assert_eq!(*command, "ADD");
            assert_eq!(network, "testnet");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("portmap") && text.contains("no iptables") && text.contains("some details"),
        "{text}"
    );
    assert_eq!(
        fx.calls(),
        [
            "ADD bridge",
            "ADD portmap",
            "DEL bandwidth",
            "DEL portmap",
            "DEL bridge"
        ]
    );
    // The rollback DEL gets what was created so far.
    assert_eq!(fx.stdin("bridge", "DEL")["prevResult"], bridge_result());
    assert!(fx.cache_files().is_empty());
}

#[test]
fn plugin_failure_without_error_json_reports_stderr() {
    let fx = Fixture::new(vec![FakePlugin::failing(
        "bridge",
        "ADD",
        Failure::Stderr("kaboom: cannot create bridge"),
    )]);
    let net = bridge_list("1.0.0", "n");
    let err = add_fails(&fx, &net);
    assert!(
        matches!(&err, CniError::PluginExit { stderr, .. } if stderr == "kaboom: cannot create bridge"),
        "{err:?}"
    );
    assert!(err.to_string().contains("kaboom"), "{err}");
    assert_eq!(fx.calls(), ["ADD bridge", "DEL bridge"]);
}

#[test]
fn invalid_plugin_result_fails_add_and_rolls_back() {
    let fx = Fixture::new(vec![FakePlugin::failing("bridge", "ADD", Failure::Garbage)]);
    let net = bridge_list("1.0.0", "n");
    let err = add_fails(&fx, &net);
    assert!(matches!(err, CniError::InvalidResult { .. }), "{err:?}");
    assert_eq!(fx.calls(), ["ADD bridge", "DEL bridge"]);
}

#[test]
fn missing_plugin_error_names_type_and_dirs() {
    let fx = Fixture::new(vec![FakePlugin::ok("bridge", bridge_result())]);
    let net = three_plugin_list("1.0.0");
    let err = add_fails(&fx, &net);
    let text = err.to_string();
    assert!(matches!(err, CniError::PluginNotFound { .. }), "{err:?}");
    assert!(text.contains("\"portmap\""), "{text}");
    assert!(
        text.contains(&fx.path("bin-empty").display().to_string()),
        "{text}"
    );
    assert!(
        text.contains(&fx.path("bin").display().to_string()),
        "{text}"
    );
    // Rolled back best-effort: the missing plugins fail DEL too (logged), the
    // bridge that was added is deleted, and nothing is cached.
    assert_eq!(fx.calls(), ["ADD bridge", "DEL bridge"]);
    assert!(fx.cache_files().is_empty());

    assert!(matches!(
        fx.cni().status(&net),
        Err(CniError::PluginNotFound { .. })
    ));
}

#[test]
fn status_succeeds_when_all_plugins_exist() {
    let fx = Fixture::new(three_plugins());
    fx.cni()
        .status(&three_plugin_list("1.0.0"))
        .expect("status");
    assert!(fx.calls().is_empty(), "status runs no plugin");
}

#[test]
fn del_tolerates_unknown_container_and_missing_netns() {
    let fx = Fixture::new(portmap_del_failing(3, "container unknown"));
    let mut rt = fx.runtime();
    rt.netns_path = fx.path("netns").join("already-gone");
    fx.cni()
        .del(&three_plugin_list("1.0.0"), &rt)
        .expect("del tolerates code 3");
    assert_eq!(fx.calls(), ["DEL bandwidth", "DEL portmap", "DEL bridge"]);
    assert_eq!(fx.env("bridge", "DEL").get("CNI_NETNS"), Some(&json!("")));
}

#[test]
fn failed_del_keeps_the_cache_for_a_retry() {
    let fx = Fixture::new(portmap_del_failing(11, "try again later"));
    let net = three_plugin_list("1.0.0");
    let cni = fx.cni();
    cni.add(&net, &fx.runtime()).expect("add");
    let err = cni.del(&net, &fx.runtime()).expect_err("del must fail");
    assert!(
        matches!(&err, CniError::Plugin { code: 11, plugin_type, .. } if plugin_type == "portmap"),
        "{err:?}"
    );
    assert_eq!(fx.calls()[3..], ["DEL bandwidth", "DEL portmap"]);
    assert_eq!(fx.cache_files(), ["testnet:pod1abc:eth0"]);
}

#[test]
fn check_runs_in_order_with_cached_result() {
    let fx = Fixture::new(three_plugins());
    let net = three_plugin_list("1.0.0");
    let cni = fx.cni();
    assert!(matches!(
        cni.check(&net, &fx.runtime()),
        Err(CniError::NoCachedResult { .. })
    ));
    let result = cni.add(&net, &fx.runtime()).expect("add");
    cni.check(&net, &fx.runtime()).expect("check");
    assert_eq!(
        fx.calls()[3..],
        ["CHECK bridge", "CHECK portmap", "CHECK bandwidth"]
    );
    assert_eq!(
        fx.stdin("portmap", "CHECK")["prevResult"],
        serde_json::to_value(&result).expect("json")
    );
}

#[test]
fn check_is_refused_before_0_4_0_and_skipped_when_disabled() {
    let fx = Fixture::new(three_plugins());
    assert!(matches!(
        fx.cni().check(&three_plugin_list("0.3.1"), &fx.runtime()),
        Err(CniError::CheckNotSupported { .. })
    ));
    let disabled = NetworkConfigList::from_conflist_bytes(
        br#"{"cniVersion":"1.0.0","name":"n","disableCheck":true,"plugins":[{"type":"bridge"}]}"#,
    )
    .expect("parse");
    fx.cni().check(&disabled, &fx.runtime()).expect("check");
    assert!(fx.calls().is_empty());
}

#[test]
fn hanging_plugin_is_killed_after_the_timeout() {
    let fx = Fixture::new(vec![FakePlugin::failing("bridge", "DEL", Failure::Hang)]);
    let net = bridge_list("1.0.0", "n");
    let cni = fx
        .cni()
        .with_plugin_timeout(Some(Duration::from_millis(300)));
    let err = cni.del(&net, &fx.runtime()).expect_err("del must time out");
    assert!(
        matches!(&err, CniError::Timeout { plugin_type, command: "DEL", .. } if plugin_type == "bridge"),
        "{err:?}"
    );
}

#[test]
fn invalid_runtime_conf_runs_nothing() {
    let fx = Fixture::new(three_plugins());
    let mut rt = fx.runtime();
    rt.container_id = "../../etc".into();
    let err = fx
        .cni()
        .add(&three_plugin_list("1.0.0"), &rt)
        .expect_err("add must fail");
    assert!(
        matches!(err, CniError::InvalidRuntimeConf { .. }),
        "{err:?}"
    );
    assert!(fx.calls().is_empty());
}

#[test]
fn result_from_cache_lists_pod_ips() {
    let fx = Fixture::new(vec![FakePlugin::ok(
        "bridge",
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [
                {"address": "fd00::7/64", "interface": 0},
                {"address": "10.0.0.7/24", "interface": 0}
            ]
        }),
    )]);
    let net = bridge_list("1.0.0", "n");
    fx.cni().add(&net, &fx.runtime()).expect("add");
    let cached: CniResult = fx
        .cni()
        .cached_result("n", "pod1abc", "eth0")
        .expect("read")
        .expect("cached");
    let ips: Vec<String> = cached.ips().iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["10.0.0.7", "fd00::7"]);
}

/// `Cni` is shared between blocking tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cni>();
};
