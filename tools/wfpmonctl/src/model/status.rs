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

use crate::error::{Error, Kind};
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

/// What `status` observed.
#[derive(Debug)]
pub struct Observed {
    /// State of the wfpmon service (`not_installed` or a [`service_state_name`]).
    pub driver: &'static str,
    /// State of the BFE service.
    pub bfe: &'static str,
    /// Opening the control device.
    pub device: Result<(), Error>,
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

/// The `wfpmon.status/1` document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusDoc {
    pub schema: &'static str,
    pub timestamp: String,
    pub active: bool,
    pub verdict: String,
    pub problems: Vec<String>,
    pub driver_service: &'static str,
    pub bfe_service: &'static str,
    pub device: &'static str,
    pub callouts_registered: usize,
    pub callouts_total: usize,
    pub filters_present: usize,
    pub filters_total: usize,
    pub objects: Vec<ObjectState>,
}

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
            Err(e) if e.kind == Kind::DriverNotLoaded => "absent",
            Err(_) => "error",
        };
        let mut problems = Vec::new();
        if o.driver != "running" || device != "present" {
            problems.push(format!(
                "the driver is not running (service {}, control device {device}): `sc.exe start wfpmon`",
                o.driver.replace('_', " ")
            ));
        }
        if let Err(e) = &o.device
            && device == "error"
        {
            problems.push(format!("control device: {e}"));
        }
        match &o.engine {
            Err(e) => problems.push(format!("filter engine (BFE {}): {e}", o.bfe.replace('_', " "))),
            Ok(_) if objects.iter().any(|s| !s.present) => {
                problems.push("filter-engine objects are missing: `wfpmonctl install`".to_owned());
            }
            Ok(_) if registered < CALLOUT_COUNT && problems.is_empty() => problems.push(format!(
                "the driver runs but only {registered} of {CALLOUT_COUNT} callouts are registered (see its debug output)"
            )),
            Ok(_) => {}
        }
        let active = problems.is_empty();
        let verdict = format!(
            "monitoring {}: driver {}, {registered}/{CALLOUT_COUNT} callouts registered, {filters}/{CALLOUT_COUNT} filters",
            if active { "active" } else { "INACTIVE" },
            o.driver.replace('_', " ")
        );
        Self {
            schema: "wfpmon.status/1",
            timestamp,
            active,
            verdict,
            problems,
            driver_service: o.driver,
            bfe_service: o.bfe,
            device,
            callouts_registered: registered,
            callouts_total: CALLOUT_COUNT,
            filters_present: filters,
            filters_total: CALLOUT_COUNT,
            objects,
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

    fn observed(driver: &'static str, registered: &[usize], installed: bool) -> Observed {
        let mut e = FakeEngine::default();
        if installed {
            engine::install(&mut e, false).unwrap();
        }
        e.registered = registered.to_vec();
        Observed {
            driver,
            bfe: "running",
            device: if driver == "running" {
                Ok(())
            } else {
                Err(Error::system(
                    Step::OpenDevice,
                    SystemCode::Win32(2),
                    "CreateFileW",
                ))
            },
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
        assert_eq!(d.text(false), format!("{}\n", d.verdict));
        assert!(d.text(true).contains("present, registered"));

        let d = StatusDoc::new(&observed("stopped", &[], true), "t".into());
        assert_eq!(
            d.verdict,
            "monitoring INACTIVE: driver stopped, 0/6 callouts registered, 6/6 filters"
        );
        assert_eq!((d.device, d.problems.len()), ("absent", 1));
        assert!(d.problems[0].contains("sc.exe start wfpmon"));

        let d = StatusDoc::new(&observed("running", &all, false), "t".into());
        assert!(
            !d.active && d.problems[0].contains("wfpmonctl install"),
            "{:?}",
            d.problems
        );
        assert_eq!(d.filters_present, 0);

        let d = StatusDoc::new(&observed("running", &all[..5], true), "t".into());
        assert!(
            !d.active && d.problems[0].contains("only 5 of 6"),
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
            "FwpmEngineOpen0",
        ));
        o.bfe = "stopped";
        let d = StatusDoc::new(&o, "t".into());
        assert!(!d.active && d.objects.is_empty());
        assert!(d.problems[1].contains("BFE stopped"), "{:?}", d.problems);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            (v["schema"].as_str(), v["active"].as_bool()),
            (Some("wfpmon.status/1"), Some(false))
        );
        assert_eq!(v["driver_service"], "not_installed");
        assert!(v["objects"].as_array().unwrap().is_empty());
        assert_eq!(service_state_name(4), "running");
        assert_eq!(service_state_name(99), "unknown");
    }
}
