//! `status`: one verdict on whether monitoring is active, the facts behind
//! it, and the `wfpmon.status/1` document.

use std::fmt::Write as _;

use serde::Serialize;
use wfpmon_core::catalog::CALLOUT_COUNT;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform::FWPM_CALLOUT_FLAG_REGISTERED;
use windows_sys::Win32::System::Services::{
    SERVICE_CONTINUE_PENDING, SERVICE_PAUSE_PENDING, SERVICE_PAUSED, SERVICE_RUNNING,
    SERVICE_START_PENDING, SERVICE_STOP_PENDING, SERVICE_STOPPED,
};

use crate::error::{Error, Kind, START_DRIVER};
use crate::plan::Object;

/// The name of a `SERVICE_STATUS_PROCESS.dwCurrentState` value.
pub const fn service_state_name(raw: u32) -> &'static str {
    match raw {
        SERVICE_STOPPED => "stopped",
        SERVICE_START_PENDING => "start_pending",
        SERVICE_STOP_PENDING => "stop_pending",
        SERVICE_RUNNING => "running",
        SERVICE_CONTINUE_PENDING => "continue_pending",
        SERVICE_PAUSE_PENDING => "pause_pending",
        SERVICE_PAUSED => "paused",
        _ => "unknown",
    }
}

/// What `status` observed. The failures are diagnosed already
/// ([`Error::device_failure`], [`Error::engine_failure`]).
#[derive(Debug)]
pub struct Observed {
    /// State of the wfpmon service (`not_installed` or a [`service_state_name`]).
    pub driver: &'static str,
    /// State of the BFE service.
    pub bfe: &'static str,
    /// Opening the control device.
    pub device: Result<(), Error>,
    /// The driver's control-protocol version (its statistics answer), when
    /// the device opened.
    pub protocol: Option<Result<u32, Error>>,
    /// The flags of every object, from the filter engine.
    pub engine: Result<Vec<(Object, Option<u32>)>, Error>,
}

/// One filter-engine object in `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectState {
    pub kind: &'static str,
    pub name: String,
    pub key: String,
    pub present: bool,
    pub registered: bool,
}

/// The `wfpmon.status/2` document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusDoc {
    pub schema: &'static str,
    pub timestamp: String,
    pub active: bool,
    /// `active`, or the [`Kind::name`] of the first problem.
    pub diagnosis: &'static str,
    /// What `status --check` exits with.
    pub exit_code: u8,
    pub verdict: String,
    pub problems: Vec<String>,
    pub driver_service: &'static str,
    pub bfe_service: &'static str,
    pub device: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_protocol_version: Option<u32>,
    pub callouts_registered: usize,
    pub callouts_total: usize,
    pub filters_present: usize,
    pub filters_total: usize,
    pub objects: Vec<ObjectState>,
    /// The kind of each problem, in `problems`' order.
    #[serde(skip)]
    pub kinds: Vec<Kind>,
}

/// The order in which problems are reported, the first deciding the exit
/// code: what keeps the others from being seen comes first.
const PRECEDENCE: [Kind; 8] = [
    Kind::BfeNotRunning,
    Kind::DriverNotInstalled,
    Kind::DriverStopped,
    Kind::NotElevated,
    Kind::DeviceBusy,
    Kind::ProtocolMismatch,
    Kind::Other,
    Kind::Inactive,
];

impl StatusDoc {
    /// The verdict on `o`.
    pub fn new(o: &Observed, timestamp: String) -> Self {
        let (mut objects, mut registered, mut filters) = (Vec::new(), 0, 0);
        for &(object, flags) in o.engine.as_deref().unwrap_or_default() {
            let (kind, present) = (object.noun(), flags.is_some());
            let is_registered = flags.is_some_and(|f| f & FWPM_CALLOUT_FLAG_REGISTERED != 0);
            let is_registered = kind == "callout" && is_registered;
            registered += usize::from(is_registered);
            filters += usize::from(kind == "filter" && present);
            let (name, key) = (object.name(), object.key().to_string());
            objects.push(ObjectState {
                kind,
                name,
                key,
                present,
                registered: is_registered,
            });
        }
        let device = match &o.device {
            Ok(()) => "present",
            Err(e) if matches!(e.kind, Kind::DriverStopped | Kind::DriverNotInstalled) => "absent",
            Err(_) => "error",
        };
        let mut problems: Vec<(Kind, String)> = Vec::new();
        let failed = |e: &Error| (e.kind, e.to_string());
        if let Err(e) = &o.engine {
            problems.push(failed(e));
        }
        match &o.device {
            Err(e) => problems.push(failed(e)),
            Ok(()) if o.driver != "running" => {
                let state = o.driver.replace('_', " ");
                let message =
                    format!("the wfpmon driver is not running (service {state}): {START_DRIVER}");
                problems.push((Kind::DriverStopped, message));
            }
            Ok(()) => {}
        }
        if let Some(Err(e)) = &o.protocol {
            problems.push(failed(e));
        }
        if o.engine.is_ok() && objects.iter().any(|s| !s.present) {
            let message = "filter-engine objects are missing: `wfpmonctl install` adds them";
            problems.push((Kind::Inactive, message.to_owned()));
        }
        if o.engine.is_ok() && registered < CALLOUT_COUNT && problems.is_empty() {
            problems.push((Kind::Inactive, format!(
                "the driver runs but only {registered} of {CALLOUT_COUNT} callouts are registered: \
                 its debug output says why (DebugView, or the ETW provider)"
            )));
        }
        problems.sort_by_key(|(kind, _)| PRECEDENCE.iter().position(|k| k == kind));
        let active = problems.is_empty();
        let first = problems.first().map(|(kind, _)| *kind);
        let state = if o.driver == "not_installed" {
            "not installed".to_owned()
        } else {
            o.driver.replace('_', " ")
        };
        let verdict = format!(
            "monitoring {}: driver {state}, {registered}/{CALLOUT_COUNT} callouts registered, {filters}/{CALLOUT_COUNT} filters",
            if active { "active" } else { "INACTIVE" },
        );
        let (kinds, problems) = problems.into_iter().unzip();
        Self {
            schema: "wfpmon.status/2",
            timestamp,
            active,
            diagnosis: first.map_or("active", Kind::name),
            exit_code: first.map_or(0, |k| k as u8),
            verdict,
            problems,
            driver_service: o.driver,
            bfe_service: o.bfe,
            device,
            driver_protocol_version: o.protocol.as_ref().and_then(|p| p.as_ref().ok().copied()),
            callouts_registered: registered,
            callouts_total: CALLOUT_COUNT,
            filters_present: filters,
            filters_total: CALLOUT_COUNT,
            objects,
            kinds,
        }
    }

    /// The verdict, its problems, and with `verbose` every object.
    pub fn text(&self, verbose: bool) -> String {
        let mut out = format!("{}\n", self.verdict);
        for p in &self.problems {
            let _ = writeln!(out, "  - {p}");
        }
        if verbose {
            let _ = writeln!(out, "BFE service: {}", self.bfe_service.replace('_', " "));
            for s in &self.objects {
                let state = match (s.present, s.registered) {
                    (_, true) => "present, registered",
                    (true, false) => "present",
                    (false, false) => "absent",
                };
                let _ = writeln!(out, "{:<9} {:<34} {{{}}}  {state}", s.kind, s.name, s.key);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{self, fake::FakeEngine};
    use crate::error::{Step, SystemCode};

    fn missing_device(driver: &str) -> Error {
        let code = SystemCode::Win32(2);
        Error::system(
            Step::OpenDevice,
            code,
            "opening the control device",
            "CreateFileW",
        )
        .device_failure(Ok(driver))
    }

    fn observed(driver: &'static str, registered: &[usize], installed: bool) -> Observed {
        let mut e = FakeEngine::default();
        if installed {
            engine::install(&mut e, false).unwrap();
        }
        e.registered = registered.to_vec();
        let running = driver == "running";
        Observed {
            driver,
            bfe: "running",
            device: if running {
                Ok(())
            } else {
                Err(missing_device(driver))
            },
            protocol: running.then_some(Ok(4)),
            engine: engine::query(&mut e),
        }
    }

    #[test]
    fn active_only_when_everything_is_in_place() {
        let all: Vec<usize> = (0..CALLOUT_COUNT).collect();
        let d = StatusDoc::new(&observed("running", &all, true), "t".into());
        assert_eq!(
            d.verdict,
            "monitoring active: driver running, 6/6 callouts registered, 6/6 filters"
        );
        assert!(d.active && d.problems.is_empty());
        assert_eq!((d.diagnosis, d.exit_code), ("active", 0));
        assert_eq!(d.driver_protocol_version, Some(4));
        assert_eq!(d.text(false), format!("{}\n", d.verdict));
        assert!(d.text(true).contains("present, registered"));

        let d = StatusDoc::new(&observed("stopped", &[], true), "t".into());
        assert_eq!(
            d.verdict,
            "monitoring INACTIVE: driver stopped, 0/6 callouts registered, 6/6 filters"
        );
        assert_eq!((d.device, d.problems.len()), ("absent", 1));
        assert!(d.problems[0].contains("sc.exe start wfpmon"));
        assert_eq!((d.diagnosis, d.exit_code), ("driver_stopped", 5));

        let d = StatusDoc::new(&observed("not_installed", &[], false), "t".into());
        assert_eq!((d.diagnosis, d.exit_code), ("driver_not_installed", 9));
        assert!(d.verdict.contains("driver not installed"), "{}", d.verdict);
        assert!(
            d.problems[0].contains("pnputil /add-driver wfpmon.inf /install"),
            "{:?}",
            d.problems
        );
        assert!(
            d.problems[1].contains("wfpmonctl install"),
            "{:?}",
            d.problems
        );

        let d = StatusDoc::new(&observed("running", &all, false), "t".into());
        assert!(
            !d.active && d.problems[0].contains("wfpmonctl install"),
            "{:?}",
            d.problems
        );
        assert_eq!((d.filters_present, d.exit_code), (0, 8));

        let d = StatusDoc::new(&observed("running", &all[..5], true), "t".into());
        assert!(
            !d.active && d.problems[0].contains("only 5 of 6"),
            "{:?}",
            d.problems
        );
        assert_eq!(d.diagnosis, "inactive");
    }

    #[test]
    fn each_case_has_its_diagnosis_and_the_first_decides() {
        let all: Vec<usize> = (0..CALLOUT_COUNT).collect();
        let device = |code| {
            Error::system(
                Step::OpenDevice,
                SystemCode::Win32(code),
                "opening",
                "CreateFileW",
            )
        };
        let mut o = observed("running", &all, true);
        o.device = Err(device(5));
        o.protocol = None;
        let d = StatusDoc::new(&o, "t".into());
        assert_eq!(
            (d.diagnosis, d.exit_code, d.device),
            ("not_elevated", 3, "error")
        );
        assert!(
            d.problems[0].contains("as administrator"),
            "{:?}",
            d.problems
        );

        let mut o = observed("running", &all, true);
        o.protocol = Some(Err(Error::system(
            Step::DeviceControl,
            SystemCode::Win32(1306),
            "reading",
            "DeviceIoControl(IOCTL_WFPMON_QUERY_STATS)",
        )));
        let d = StatusDoc::new(&o, "t".into());
        assert_eq!((d.diagnosis, d.exit_code), ("protocol_mismatch", 7));
        assert!(d.problems[0].contains("same build"), "{:?}", d.problems);

        let mut o = observed("running", &all, true);
        o.device = Err(device(170));
        o.protocol = None;
        let d = StatusDoc::new(&o, "t".into());
        assert_eq!((d.diagnosis, d.exit_code), ("device_busy", 10));

        // The service stopping while its device is still open.
        let mut o = observed("running", &all, true);
        o.driver = "stop_pending";
        let d = StatusDoc::new(&o, "t".into());
        assert_eq!((d.diagnosis, d.exit_code), ("driver_stopped", 5));
        assert!(
            d.problems[0].contains("service stop pending"),
            "{:?}",
            d.problems
        );

        // BFE down hides everything else and comes first.
        let mut o = observed("not_installed", &[], false);
        o.bfe = "stopped";
        o.engine = Err(Error::system(
            Step::Engine,
            SystemCode::Win32(1753),
            "opening a filter-engine session",
            "FwpmEngineOpen0",
        )
        .engine_failure(Ok("stopped")));
        let d = StatusDoc::new(&o, "t".into());
        assert_eq!((d.diagnosis, d.exit_code), ("bfe_not_running", 4));
        assert_eq!(d.kinds, [Kind::BfeNotRunning, Kind::DriverNotInstalled]);
        assert!(
            d.problems[0].contains("sc.exe start bfe"),
            "{:?}",
            d.problems
        );
    }

    #[test]
    fn engine_failure_is_a_problem_and_json_keeps_its_types() {
        let mut o = observed("not_installed", &[], false);
        o.engine = Err(Error::system(
            Step::Engine,
            SystemCode::Win32(1753),
            "opening a filter-engine session",
            "FwpmEngineOpen0",
        )
        .engine_failure(Ok("stopped")));
        o.bfe = "stopped";
        let d = StatusDoc::new(&o, "t".into());
        assert!(!d.active && d.objects.is_empty());
        assert!(
            d.problems[0].contains("(service stopped)"),
            "{:?}",
            d.problems
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            (
                v["schema"].as_str(),
                v["active"].as_bool(),
                v["exit_code"].as_u64()
            ),
            (Some("wfpmon.status/2"), Some(false), Some(4))
        );
        assert_eq!(v["driver_service"], "not_installed");
        assert!(v["objects"].as_array().unwrap().is_empty());
        assert!(v.get("kinds").is_none() && v.get("driver_protocol_version").is_none());
        assert_eq!(service_state_name(4), "running");
        assert_eq!(service_state_name(99), "unknown");
    }
}
