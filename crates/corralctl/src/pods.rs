//! Pod sandbox verbs: `runp`, `stopp`, `rmp`, `pods`, `inspectp`.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::Args;
use cri_proto::v1::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest,
};

use crate::client::Cri;
use crate::config::load_config;
use crate::flags::parse_labels;
use crate::output::{
    age, pod_state_name, print_document, push_labels_and_annotations, short_id, status_document,
    DocumentFormat, ListFormat, Table,
};

/// `runp`: run a pod sandbox from a config file and print its ID.
#[derive(Debug, Args)]
pub struct RunpArgs {
    /// Runtime handler to use (a RuntimeClass handler); the default handler if unset.
    #[arg(short = 'r', long)]
    pub runtime: Option<String>,
    /// PodSandboxConfig file, JSON or YAML.
    pub config: PathBuf,
}

/// `stopp`: stop pod sandboxes.
#[derive(Debug, Args)]
pub struct StoppArgs {
    /// Pod sandbox IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `rmp`: remove pod sandboxes.
#[derive(Debug, Args)]
pub struct RmpArgs {
    /// Stop a pod sandbox that is still ready before removing it.
    #[arg(short, long)]
    pub force: bool,
    /// Pod sandbox IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `pods`: list pod sandboxes.
#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Only the pod sandbox with this ID.
    #[arg(long)]
    pub id: Option<String>,
    /// Only pod sandboxes whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only pod sandboxes whose namespace contains this.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only pod sandboxes in this state: ready or notready.
    #[arg(short, long)]
    pub state: Option<String>,
    /// Only pod sandboxes with this label (key=value); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Output flags shared by the list verbs.
    #[command(flatten)]
    pub format: ListFormat,
}

/// `inspectp`: print the verbose status of pod sandboxes.
#[derive(Debug, Args)]
pub struct InspectpArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = DocumentFormat::Json)]
    pub output: DocumentFormat,
    /// Pod sandbox IDs or unique prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Runs a pod sandbox and prints its ID.
pub async fn runp(cri: &mut Cri, args: RunpArgs) -> Result<()> {
    let config: PodSandboxConfig = load_config(&args.config)?;
    let request = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: args.runtime.unwrap_or_default(),
    };
    let response = cri.runtime.run_pod_sandbox(request).await?.into_inner();
    println!("{}", response.pod_sandbox_id);
    Ok(())
}

/// Stops each pod sandbox.
pub async fn stopp(cri: &mut Cri, args: StoppArgs) -> Result<()> {
    for prefix in &args.ids {
        let id = cri.resolve_pod_id(prefix).await?;
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        cri.runtime.stop_pod_sandbox(request).await?;
        println!("Stopped sandbox {id}");
    }
    Ok(())
}

/// Removes each pod sandbox; a ready one only with `--force` (it is stopped first).
pub async fn rmp(cri: &mut Cri, args: RmpArgs) -> Result<()> {
    for prefix in &args.ids {
        let id = cri.resolve_pod_id(prefix).await?;
        if args.force {
            let request = StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            };
            cri.runtime.stop_pod_sandbox(request).await?;
        } else {
            let request = PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            };
            let status = cri.runtime.pod_sandbox_status(request).await?.into_inner();
            let ready = status
                .status
                .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
            if ready {
                bail!("pod sandbox {id} is still ready: stop it first, or use --force");
            }
        }
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        cri.runtime.remove_pod_sandbox(request).await?;
        println!("Removed sandbox {id}");
    }
    Ok(())
}

/// Lists pod sandboxes as a table, IDs, details, JSON or YAML.
pub async fn pods(cri: &mut Cri, args: PodsArgs) -> Result<()> {
    let request = ListPodSandboxRequest {
        filter: Some(pod_filter(&args)?),
    };
    let items = cri
        .runtime
        .list_pod_sandbox(request)
        .await?
        .into_inner()
        .items;
    let items = select_pods(items, args.name.as_deref(), args.namespace.as_deref());

    if let Some(format) = args.format.output.document() {
        return print_document(
            &ListPodSandboxResponse {
                items,
                ..Default::default()
            },
            format,
        );
    }
    if args.format.quiet {
        for pod in &items {
            println!("{}", pod.id);
        }
    } else if args.format.verbose {
        for pod in &items {
            print!("{}", pod_details(pod, SystemTime::now()));
        }
    } else {
        pod_table(&items, SystemTime::now(), args.format.no_trunc).print();
    }
    Ok(())
}

/// Prints `{"status": ..., "info": ...}` for each pod sandbox (a list when more than one).
pub async fn inspectp(cri: &mut Cri, args: InspectpArgs) -> Result<()> {
    let mut documents = Vec::new();
    for prefix in &args.ids {
        let id = cri.resolve_pod_id(prefix).await?;
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: true,
        };
        let response = cri.runtime.pod_sandbox_status(request).await?.into_inner();
        documents.push(status_document(&response.status, &response.info)?);
    }
    match documents.as_slice() {
        [single] => print_document(single, args.output),
        all => print_document(all, args.output),
    }
}

/// The server-side filter for `pods`.
fn pod_filter(args: &PodsArgs) -> Result<PodSandboxFilter> {
    let state = match &args.state {
        Some(state) => Some(PodSandboxStateValue {
            state: parse_pod_state(state)? as i32,
        }),
        None => None,
    };
    Ok(PodSandboxFilter {
        id: args.id.clone().unwrap_or_default(),
        state,
        label_selector: parse_labels(&args.labels)?,
    })
}

/// `--state` of `pods`: `ready` or `notready`, any case.
pub fn parse_pod_state(state: &str) -> Result<PodSandboxState> {
    match state.to_ascii_lowercase().as_str() {
        "ready" | "sandbox_ready" => Ok(PodSandboxState::SandboxReady),
        "notready" | "sandbox_notready" => Ok(PodSandboxState::SandboxNotready),
        _ => bail!("--state must be ready or notready, not {state:?}"),
    }
}

/// Keeps the pods whose name and namespace contain the given texts, newest first.
pub fn select_pods(
    mut pods: Vec<PodSandbox>,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Vec<PodSandbox> {
    pods.retain(|pod| {
        let metadata = pod.metadata.clone().unwrap_or_default();
        name.is_none_or(|n| metadata.name.contains(n))
            && namespace.is_none_or(|n| metadata.namespace.contains(n))
    });
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    pods
}

/// The `pods` table: `POD ID  CREATED  STATE  NAME  NAMESPACE  ATTEMPT  RUNTIME`.
pub fn pod_table(pods: &[PodSandbox], now: SystemTime, no_trunc: bool) -> Table {
    let mut table = Table::with_header(&[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for pod in pods {
        let metadata = pod.metadata.clone().unwrap_or_default();
        let id = if no_trunc { &pod.id } else { short_id(&pod.id) };
        table.push(vec![
            id.to_string(),
            age(pod.created_at, now),
            pod_state_name(pod.state).to_string(),
            metadata.name,
            metadata.namespace,
            metadata.attempt.to_string(),
            runtime_handler_name(&pod.runtime_handler).to_string(),
        ]);
    }
    table
}

/// A runtime handler as tables show it; the empty name is the default handler.
pub fn runtime_handler_name(handler: &str) -> &str {
    if handler.is_empty() {
        "(default)"
    } else {
        handler
    }
}

/// The `pods -v` block of one pod sandbox.
fn pod_details(pod: &PodSandbox, now: SystemTime) -> String {
    let metadata = pod.metadata.clone().unwrap_or_default();
    let mut out = format!("ID: {}\n", pod.id);
    out += &format!("Name: {}\n", metadata.name);
    out += &format!("UID: {}\n", metadata.uid);
    out += &format!("Namespace: {}\n", metadata.namespace);
    out += &format!("Attempt: {}\n", metadata.attempt);
    out += &format!("Status: {}\n", pod_state_name(pod.state));
    out += &format!("Created: {}\n", age(pod.created_at, now));
    out += &format!("Runtime: {}\n", runtime_handler_name(&pod.runtime_handler));
    push_labels_and_annotations(&mut out, &pod.labels, &pod.annotations);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::v1::PodSandboxMetadata;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW_SECS: u64 = 1_700_000_000;

    fn pod(id: &str, name: &str, namespace: &str, created_secs_ago: i64) -> PodSandbox {
        PodSandbox {
            id: id.to_string(),
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                namespace: namespace.to_string(),
                uid: format!("uid-{name}"),
                attempt: 1,
            }),
            state: PodSandboxState::SandboxReady as i32,
            created_at: (NOW_SECS as i64 - created_secs_ago) * 1_000_000_000,
            ..Default::default()
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    #[test]
    fn table_has_crictl_columns_short_ids_and_ages() {
        let mut runc = pod("0123456789abcdef0123", "nginx", "default", 120);
        runc.runtime_handler = "crun".to_string();
        let mut stopped = pod("fedcba9876543210", "db", "prod", 7200);
        stopped.state = PodSandboxState::SandboxNotready as i32;
        let rendered = pod_table(&[runc, stopped], now(), false).render();
        let expected = concat!(
            "POD ID              CREATED             STATE               NAME                NAMESPACE           ATTEMPT             RUNTIME\n",
            "0123456789abc       2 minutes ago       Ready               nginx               default             1                   crun\n",
            "fedcba9876543       2 hours ago         NotReady            db                  prod                1                   (default)\n",
        );
        assert_eq!(rendered, expected);
    }

    #[test]
    fn no_trunc_keeps_full_ids() {
        let rendered = pod_table(&[pod("0123456789abcdef0123", "a", "b", 1)], now(), true).render();
        assert!(rendered.contains("0123456789abcdef0123 "), "{rendered}");
    }

    #[test]
    fn selection_filters_by_name_and_namespace_and_sorts_newest_first() {
        let pods = vec![
            pod("old", "web-1", "default", 300),
            pod("new", "web-2", "default", 10),
            pod("other", "db", "default", 5),
            pod("elsewhere", "web-3", "kube-system", 1),
        ];
        let selected = select_pods(pods.clone(), Some("web"), Some("default"));
        let ids: Vec<&str> = selected.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, vec!["new", "old"]);

        let all = select_pods(pods, None, None);
        assert_eq!(all.first().map(|p| p.id.as_str()), Some("elsewhere"));
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn pod_states() {
        assert_eq!(
            parse_pod_state("Ready").expect("valid"),
            PodSandboxState::SandboxReady
        );
        assert_eq!(
            parse_pod_state("notready").expect("valid"),
            PodSandboxState::SandboxNotready
        );
        assert!(parse_pod_state("running").is_err());
    }

    #[test]
    fn filter_from_flags() {
        let args = PodsArgs {
            id: Some("abc".into()),
            name: None,
            namespace: None,
            state: Some("ready".into()),
            labels: vec!["app=web".into()],
            format: crate::output::ListFormat::table(),
        };
        let filter = pod_filter(&args).expect("valid flags");
        assert_eq!(filter.id, "abc");
        assert_eq!(
            filter.state.map(|s| s.state),
            Some(PodSandboxState::SandboxReady as i32)
        );
        assert_eq!(filter.label_selector["app"], "web");
    }

    #[test]
    fn verbose_details() {
        let mut p = pod("abc", "nginx", "default", 60);
        p.labels.insert("b".into(), "2".into());
        p.labels.insert("a".into(), "1".into());
        let details = pod_details(&p, now());
        assert!(
            details.starts_with("ID: abc\nName: nginx\nUID: uid-nginx\n"),
            "{details}"
        );
        assert!(details.contains("Status: Ready\n"));
        assert!(details.contains("Created: About a minute ago\n"));
        assert!(
            details.contains("Labels:\n\ta -> 1\n\tb -> 2\n"),
            "{details}"
        );
        assert!(!details.contains("Annotations"));
    }
}
