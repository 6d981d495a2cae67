//! The systemd cgroup driver where systemd runs: pod slices and the pause process's scope are
//! transient units that systemd creates, limits and removes, asked over D-Bus.
//!
//! On a host where systemd is PID 1 it owns the cgroup tree: cgroups made behind its back are
//! neither accounted nor protected, and `systemctl daemon-reload` may reset them. So, as runc and
//! the kubelet do, corral asks the systemd manager (`org.freedesktop.systemd1`) for
//! `StartTransientUnit` of a `.slice` per pod (with `MemoryMax`, `CPUQuotaPerSecUSec`,
//! `CPUWeight`, `TasksMax`, ...), of a `.scope` with `Delegate=yes` holding the pause process,
//! `SetUnitProperties` for pod resource updates and `StopUnit` for removal. Containers' scopes
//! are runc's job: it gets `--systemd-cgroup` and a `slice:corral:<id>` `cgroupsPath`, and talks
//! to systemd itself (also for `runc update`).
//!
//! What stays ours: the cgroup naming ([`crate::CgroupDriver`]), limits systemd has no property
//! for (hugetlb, raw `unified` files, cpusets) which are written to the slice's cgroup files
//! after systemd made it, and deciding when a slice is unused.
//!
//! Why zbus directly rather than cgroups-rs 0.5's systemd manager: that client insists on a
//! `PIDs` property for every unit (a pod slice has no process of its own when it is made), opens
//! a new bus connection per call, and would bring a second nix (0.25) and thiserror (1) into the
//! build. The three manager calls needed here are a few lines on zbus's blocking API, which
//! cgroups-rs uses underneath too.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{CgroupError, Result};
use crate::layout::{CgroupLayout, CgroupMode};
use crate::resources::{shares_to_weight, Resources};

/// Present when systemd is the init system (what `sd_booted()` checks).
pub const SYSTEMD_RUNNING_MARKER: &str = "/run/systemd/system";
/// The system bus's socket.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";

/// How long a started or stopped unit gets to reach its state (the test VM is slow).
const UNIT_STATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether systemd runs as init and its D-Bus API can be reached.
pub fn systemd_available() -> bool {
    Path::new(SYSTEMD_RUNNING_MARKER).is_dir() && Path::new(SYSTEM_BUS_SOCKET).exists()
}

/// A unit property's value, in the D-Bus types systemd expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    /// `t`
    U64(u64),
    /// `b`
    Bool(bool),
    /// `s`
    Str(String),
    /// `au` (the `PIDs` of a scope)
    U32List(Vec<u32>),
    /// `as` (`Wants`)
    StrList(Vec<String>),
}

/// One property of a transient unit: (name, value).
pub type UnitProperty = (&'static str, PropertyValue);

/// Whether `StartTransientUnit` made the unit or found it already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// systemd created and started the unit.
    New,
    /// A unit of that name already existed (the kubelet's slice, another sandbox's).
    AlreadyExisted,
}

/// The systemd manager calls corral needs; [`SystemdBus`] is the real one, tests use fakes.
pub trait UnitManager: Send + Sync + fmt::Debug {
    /// Starts the transient unit `name` and waits until it is active.
    fn start_transient_unit(&self, name: &str, properties: &[UnitProperty]) -> Result<Started>;
    /// Changes properties of the running unit `name` (runtime only, as runc does).
    fn set_unit_properties(&self, name: &str, properties: &[UnitProperty]) -> Result<()>;
    /// Stops `name` and waits until it is gone; a unit that does not exist is fine.
    fn stop_unit(&self, name: &str) -> Result<()>;
}

/// The properties every unit corral starts gets: accounting on, and no implicit ordering
/// against `shutdown.target` and friends (as runc sets).
fn common_properties(description: String) -> Vec<UnitProperty> {
    vec![
        ("Description", PropertyValue::Str(description)),
        ("DefaultDependencies", PropertyValue::Bool(false)),
        ("MemoryAccounting", PropertyValue::Bool(true)),
        ("CPUAccounting", PropertyValue::Bool(true)),
        ("IOAccounting", PropertyValue::Bool(true)),
        ("TasksAccounting", PropertyValue::Bool(true)),
    ]
}

/// The properties of a pod slice `slice` (its parent slice is wanted, so it comes up first).
pub(crate) fn slice_properties(slice: &str) -> Vec<UnitProperty> {
    let mut properties = common_properties(format!("corral pod slice {slice}"));
    if let Some(parent) = parent_slice(slice) {
        properties.push(("Wants", PropertyValue::StrList(vec![parent])));
    }
    properties
}

/// The properties of the scope `scope` in `slice` that takes over `pid`.
pub(crate) fn scope_properties(scope: &str, slice: &str, pid: u32) -> Vec<UnitProperty> {
    let mut properties = common_properties(format!("corral {scope}"));
    properties.push(("Slice", PropertyValue::Str(slice.to_owned())));
    properties.push(("Delegate", PropertyValue::Bool(true)));
    properties.push(("PIDs", PropertyValue::U32List(vec![pid])));
    properties
}

/// `a-b-c.slice` → `a-b.slice`; a top-level slice's parent is `-.slice`, which always exists.
fn parent_slice(slice: &str) -> Option<String> {
    let stem = slice.strip_suffix(".slice")?;
    let (parent, _) = stem.rsplit_once('-')?;
    (!parent.is_empty()).then(|| format!("{parent}.slice"))
}

/// `Resources` as systemd unit properties, the way runc's systemd driver maps them; and what
/// systemd has no property for, to be written to the cgroup files directly.
pub(crate) fn resource_properties(
    layout: &CgroupLayout,
    resources: &Resources,
) -> (Vec<UnitProperty>, Resources) {
    let mut props = Vec::new();
    let v2 = layout.mode() == CgroupMode::V2;
    let unlimited = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
    if let Some(memory) = resources.memory_limit_bytes.filter(|m| *m != 0) {
        props.push(("MemoryMax", PropertyValue::U64(unlimited(memory))));
        if let Some(swap) = resources.memory_swap_limit_bytes.filter(|s| *s != 0) {
            // OCI's memory+swap becomes systemd's (v2) swap-only limit.
            let swap_only = if swap < 0 || memory < 0 {
                u64::MAX
            } else {
                (swap - memory).max(0) as u64
            };
            if v2 {
                props.push(("MemorySwapMax", PropertyValue::U64(swap_only)));
            }
        }
    }
    if let Some(shares) = resources.cpu_shares.filter(|s| *s != 0) {
        if v2 {
            props.push(("CPUWeight", PropertyValue::U64(shares_to_weight(shares))));
        } else {
            props.push(("CPUShares", PropertyValue::U64(shares)));
        }
    }
    if let Some(quota) = resources.cpu_quota.filter(|q| *q != 0) {
        let period = resources.cpu_period.filter(|p| *p != 0).unwrap_or(100_000);
        props.push(("CPUQuotaPeriodUSec", PropertyValue::U64(period)));
        let per_sec = if quota < 0 {
            u64::MAX
        } else {
            // systemd keeps the quota as a whole percentage of a CPU: round up to 10 ms per
            // second so the cgroup never gets less than asked (runc does the same).
            let per_sec = (quota as u64).saturating_mul(1_000_000) / period;
            per_sec.div_ceil(10_000) * 10_000
        };
        props.push(("CPUQuotaPerSecUSec", PropertyValue::U64(per_sec)));
    }
    if let Some(pids) = resources.pids_limit.filter(|p| *p != 0) {
        props.push(("TasksMax", PropertyValue::U64(unlimited(pids))));
    }
    let mut unified = resources.unified.clone();
    let io_weight = unified.get(IO_WEIGHT_FILE).filter(|_| v2);
    if let Some(weight) = io_weight_property(io_weight.map(String::as_str)) {
        unified.remove(IO_WEIGHT_FILE);
        props.push(weight);
    }
    let rest = Resources {
        cpuset_cpus: resources.cpuset_cpus.clone(),
        cpuset_mems: resources.cpuset_mems.clone(),
        hugepage_limits: resources.hugepage_limits.clone(),
        unified,
        ..Resources::default()
    };
    (props, rest)
}

/// cgroup v2's I/O weight file.
pub const IO_WEIGHT_FILE: &str = "io.weight";

/// `IOWeight` for a `unified` `io.weight` value (`N` or `default N`, 1..=10000), which the
/// CRI can only carry as a raw file. Written behind systemd's back it would not last: the VM
/// suite saw `systemctl daemon-reload` reset a container scope's `io.weight` to systemd's
/// default, since runc's systemd driver maps `unified` CPU, memory and pids files to
/// properties but not this one. `None` when there is no value or it does not parse (then it
/// stays a file write, and a bad value fails there with the kernel's error).
pub fn io_weight_property(io_weight: Option<&str>) -> Option<UnitProperty> {
    let value = io_weight?.trim();
    let weight = value.strip_prefix("default ").unwrap_or(value).trim();
    let weight: u64 = weight.parse().ok().filter(|w| (1..=10_000).contains(w))?;
    Some(("IOWeight", PropertyValue::U64(weight)))
}

/// The systemd manager on the system bus (zbus, blocking: callers are on blocking threads).
pub struct SystemdBus {
    connection: zbus::blocking::Connection,
}

impl fmt::Debug for SystemdBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemdBus").finish_non_exhaustive()
    }
}

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_IFACE: &str = "org.freedesktop.systemd1.Manager";
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const UNIT_EXISTS: &str = "org.freedesktop.systemd1.UnitExists";

fn systemd_error(op: &'static str, unit: &str, reason: impl ToString) -> CgroupError {
    CgroupError::Systemd {
        op,
        unit: unit.to_owned(),
        reason: reason.to_string(),
    }
}

fn is_method_error(error: &zbus::Error, name: &str) -> bool {
    matches!(error, zbus::Error::MethodError(n, _, _) if n.as_str() == name)
}

fn to_value(value: &PropertyValue) -> zbus::zvariant::Value<'_> {
    use zbus::zvariant::Value;
    match value {
        PropertyValue::U64(v) => Value::U64(*v),
        PropertyValue::Bool(v) => Value::Bool(*v),
        PropertyValue::Str(v) => Value::from(v.as_str()),
        PropertyValue::U32List(v) => Value::from(v.clone()),
        PropertyValue::StrList(v) => Value::from(v.clone()),
    }
}

impl SystemdBus {
    /// Connects to the system bus.
    pub fn connect() -> Result<Self> {
        let connection = zbus::blocking::Connection::system()
            .map_err(|e| systemd_error("connect to the system bus", SYSTEM_BUS_SOCKET, e))?;
        Ok(Self { connection })
    }

    fn call<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.connection.call_method(
            Some(DESTINATION),
            MANAGER_PATH,
            Some(MANAGER_IFACE),
            method,
            body,
        )
    }

    /// The unit's `ActiveState`, or `None` when systemd has no such unit loaded.
    fn active_state(&self, name: &str) -> Result<Option<String>> {
        let path: zbus::zvariant::OwnedObjectPath = match self.call("GetUnit", &(name,)) {
            Ok(reply) => reply
                .body()
                .deserialize()
                .map_err(|e| systemd_error("GetUnit", name, e))?,
            Err(e) if is_method_error(&e, NO_SUCH_UNIT) => return Ok(None),
            Err(e) => return Err(systemd_error("GetUnit", name, e)),
        };
        let reply = self
            .connection
            .call_method(
                Some(DESTINATION),
                path.as_ref(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Unit", "ActiveState"),
            )
            .map_err(|e| systemd_error("get ActiveState of", name, e))?;
        let value: zbus::zvariant::OwnedValue = reply
            .body()
            .deserialize()
            .map_err(|e| systemd_error("get ActiveState of", name, e))?;
        let state =
            String::try_from(value).map_err(|e| systemd_error("get ActiveState of", name, e))?;
        Ok(Some(state))
    }

    /// Polls until `done` says the unit's state is reached.
    fn wait_for(
        &self,
        op: &'static str,
        name: &str,
        done: impl Fn(Option<&str>) -> Result<bool>,
    ) -> Result<()> {
        let deadline = Instant::now() + UNIT_STATE_TIMEOUT;
        loop {
            let state = self.active_state(name)?;
            if done(state.as_deref())? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(systemd_error(
                    op,
                    name,
                    format!("still {state:?} after {UNIT_STATE_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl UnitManager for SystemdBus {
    fn start_transient_unit(&self, name: &str, properties: &[UnitProperty]) -> Result<Started> {
        let props: Vec<(&str, zbus::zvariant::Value<'_>)> =
            properties.iter().map(|(k, v)| (*k, to_value(v))).collect();
        let aux: Vec<(&str, Vec<(&str, zbus::zvariant::Value<'_>)>)> = Vec::new();
        match self.call("StartTransientUnit", &(name, "replace", props, aux)) {
            Ok(_) => {}
            Err(e) if is_method_error(&e, UNIT_EXISTS) => return Ok(Started::AlreadyExisted),
            Err(e) => return Err(systemd_error("StartTransientUnit", name, e)),
        }
        self.wait_for("start", name, |state| match state {
            Some("active") => Ok(true),
            Some("failed") => Err(systemd_error(
                "start",
                name,
                "the unit failed (journalctl -u it)",
            )),
            _ => Ok(false),
        })?;
        tracing::debug!(unit = name, "systemd started transient unit");
        Ok(Started::New)
    }

    fn set_unit_properties(&self, name: &str, properties: &[UnitProperty]) -> Result<()> {
        let props: Vec<(&str, zbus::zvariant::Value<'_>)> =
            properties.iter().map(|(k, v)| (*k, to_value(v))).collect();
        self.call("SetUnitProperties", &(name, true, props))
            .map_err(|e| systemd_error("SetUnitProperties", name, e))?;
        tracing::debug!(unit = name, "systemd set unit properties");
        Ok(())
    }

    fn stop_unit(&self, name: &str) -> Result<()> {
        match self.call("StopUnit", &(name, "replace")) {
            Ok(_) => {}
            Err(e) if is_method_error(&e, NO_SUCH_UNIT) => return Ok(()),
            Err(e) => return Err(systemd_error("StopUnit", name, e)),
        }
        self.wait_for("stop", name, |state| {
            Ok(matches!(state, None | Some("inactive") | Some("failed")))
        })?;
        // A failed unit stays loaded until reset; nothing must be left behind.
        if let Err(e) = self.call("ResetFailedUnit", &(name,)) {
            if !is_method_error(&e, NO_SUCH_UNIT) {
                tracing::debug!(unit = name, error = %e, "ResetFailedUnit");
            }
        }
        tracing::debug!(unit = name, "systemd stopped unit");
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A unit manager that records calls and keeps units in memory.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Records every call; `units` holds the started units and their last properties.
    #[derive(Debug, Default)]
    pub(crate) struct FakeUnits {
        pub units: Mutex<BTreeMap<String, Vec<UnitProperty>>>,
        pub calls: Mutex<Vec<String>>,
        /// A unit whose start fails.
        pub failing: Option<String>,
    }

    impl FakeUnits {
        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.lock().expect("poisoned").clone()
        }

        pub(crate) fn property(&self, unit: &str, name: &str) -> Option<PropertyValue> {
            let units = self.units.lock().expect("poisoned");
            units
                .get(unit)?
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    impl UnitManager for FakeUnits {
        fn start_transient_unit(&self, name: &str, props: &[UnitProperty]) -> Result<Started> {
            self.calls
                .lock()
                .expect("poisoned")
                .push(format!("start {name}"));
            if self.failing.as_deref() == Some(name) {
                return Err(systemd_error("StartTransientUnit", name, "refused"));
            }
            let mut units = self.units.lock().expect("poisoned");
            if units.contains_key(name) {
                return Ok(Started::AlreadyExisted);
            }
            units.insert(name.to_owned(), props.to_vec());
            Ok(Started::New)
        }

        fn set_unit_properties(&self, name: &str, props: &[UnitProperty]) -> Result<()> {
            self.calls
                .lock()
                .expect("poisoned")
                .push(format!("set {name}"));
            let mut units = self.units.lock().expect("poisoned");
            let unit = units
                .get_mut(name)
                .ok_or_else(|| systemd_error("SetUnitProperties", name, "no such unit"))?;
            unit.extend(props.iter().cloned());
            Ok(())
        }

        fn stop_unit(&self, name: &str) -> Result<()> {
            self.calls
                .lock()
                .expect("poisoned")
                .push(format!("stop {name}"));
            self.units.lock().expect("poisoned").remove(name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mock::MockCgroupFs;

    fn find(props: &[UnitProperty], name: &str) -> Option<PropertyValue> {
        props
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn parent_slices() {
        assert_eq!(parent_slice("a-b-c.slice").as_deref(), Some("a-b.slice"));
        assert_eq!(parent_slice("a.slice"), None);
        assert_eq!(parent_slice("x.scope"), None);
    }

    #[test]
    fn limits_become_systemd_properties_on_v2() {
        let layout = MockCgroupFs::v2().layout();
        let resources = Resources {
            memory_limit_bytes: Some(64 << 20),
            memory_swap_limit_bytes: Some(96 << 20),
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            pids_limit: Some(32),
            hugepage_limits: vec![("2MB".into(), 0)],
            ..Resources::default()
        };
        let (props, rest) = resource_properties(&layout, &resources);
        assert_eq!(
            find(&props, "MemoryMax"),
            Some(PropertyValue::U64(64 << 20))
        );
        assert_eq!(
            find(&props, "MemorySwapMax"),
            Some(PropertyValue::U64(32 << 20))
        );
        assert_eq!(find(&props, "CPUWeight"), Some(PropertyValue::U64(39)));
        assert_eq!(
            find(&props, "CPUQuotaPerSecUSec"),
            Some(PropertyValue::U64(500_000))
        );
        assert_eq!(
            find(&props, "CPUQuotaPeriodUSec"),
            Some(PropertyValue::U64(100_000))
        );
        assert_eq!(find(&props, "TasksMax"), Some(PropertyValue::U64(32)));
        assert_eq!(rest.hugepage_limits, resources.hugepage_limits);
        assert_eq!(rest.memory_limit_bytes, None);
    }

    #[test]
    fn unlimited_and_fractional_values() {
        let layout = MockCgroupFs::v2().layout();
        let resources = Resources {
            memory_limit_bytes: Some(-1),
            cpu_quota: Some(12_345),
            cpu_period: Some(100_000),
            pids_limit: Some(-1),
            ..Resources::default()
        };
        let (props, _) = resource_properties(&layout, &resources);
        assert_eq!(
            find(&props, "MemoryMax"),
            Some(PropertyValue::U64(u64::MAX))
        );
        assert_eq!(find(&props, "TasksMax"), Some(PropertyValue::U64(u64::MAX)));
        // 12.345% of a CPU is rounded up to 13%: never less than asked.
        assert_eq!(
            find(&props, "CPUQuotaPerSecUSec"),
            Some(PropertyValue::U64(130_000))
        );
        let none = resource_properties(&layout, &Resources::default()).0;
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn a_unified_io_weight_becomes_io_weight() {
        let io = |v: &str| io_weight_property(Some(v));
        assert_eq!(
            io("default 200"),
            Some(("IOWeight", PropertyValue::U64(200)))
        );
        assert_eq!(io("50"), Some(("IOWeight", PropertyValue::U64(50))));
        for bad in ["0", "10001", "8:0 100", "default x", ""] {
            assert_eq!(io(bad), None, "{bad}");
        }
        assert_eq!(io_weight_property(None), None);
        let layout = MockCgroupFs::v2().layout();
        let resources = Resources {
            unified: [
                ("io.weight".to_string(), "default 300".to_string()),
                ("memory.high".to_string(), "1G".to_string()),
            ]
            .into(),
            ..Resources::default()
        };
        let (props, rest) = resource_properties(&layout, &resources);
        assert_eq!(find(&props, "IOWeight"), Some(PropertyValue::U64(300)));
        // Left to systemd, not written to the file as well; the rest still is.
        assert_eq!(rest.unified.keys().collect::<Vec<_>>(), ["memory.high"]);
    }

    #[test]
    fn v1_hosts_get_cpu_shares() {
        let layout = MockCgroupFs::hybrid().layout();
        let resources = Resources {
            cpu_shares: Some(512),
            ..Resources::default()
        };
        let (props, _) = resource_properties(&layout, &resources);
        assert_eq!(find(&props, "CPUShares"), Some(PropertyValue::U64(512)));
        assert_eq!(find(&props, "CPUWeight"), None);
    }

    #[test]
    fn scopes_are_delegated_and_take_the_pid() {
        let props = scope_properties("corral-abc.scope", "corral-pod1.slice", 42);
        assert_eq!(
            find(&props, "Slice"),
            Some(PropertyValue::Str("corral-pod1.slice".into()))
        );
        assert_eq!(find(&props, "Delegate"), Some(PropertyValue::Bool(true)));
        assert_eq!(find(&props, "PIDs"), Some(PropertyValue::U32List(vec![42])));
        let slice = slice_properties("kubepods-burstable-pod1.slice");
        assert_eq!(
            find(&slice, "Wants"),
            Some(PropertyValue::StrList(vec![
                "kubepods-burstable.slice".into()
            ]))
        );
        assert_eq!(find(&slice, "PIDs"), None);
    }
}
