//! Running commands: the refresh loop, error reporting, and the decisions
//! that combine several observations (BFE's service state with an engine
//! failure, the parts of `status`). Platform-independent.

use std::io::Write;
use std::time::Duration;

use crate::engine::{DeviceState, ServiceState, StatusReport, WfpStatus};
use crate::exit::{self, Error, Kind, Step, SystemCode};

/// ANSI "clear screen, cursor home", used between refreshes on a terminal.
pub const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// Writes `render()` to `out` once, or repeatedly with `watch`.
///
/// With `watch`, it renders every `watch` seconds until `render` fails or
/// the output closes. `clear` clears the
/// screen before each refresh (table output on a terminal); otherwise
/// refreshes are separated by a blank line (JSON: one object per refresh).
///
/// # Errors
/// The first error of `render`, or a failure to write the output.
pub fn refresh<W, R, S>(
    out: &mut W,
    watch: Option<u64>,
    clear: bool,
    mut render: R,
    mut sleep: S,
) -> Result<(), Error>
where
    W: Write,
    R: FnMut() -> Result<String, Error>,
    S: FnMut(Duration),
{
    let mut first = true;
    loop {
        let text = render()?;
        let mut chunk = String::new();
        if clear {
            chunk.push_str(CLEAR_SCREEN);
        } else if !first {
            chunk.push('\n');
        }
        chunk.push_str(&text);
        if !text.ends_with('\n') {
            chunk.push('\n');
        }
        out.write_all(chunk.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| Error::new(Kind::Other, format!("writing the output failed: {e}")))?;
        first = false;
        match watch {
            None => return Ok(()),
            Some(seconds) => sleep(Duration::from_secs(seconds)),
        }
    }
}

/// The error for a failed `FwpmEngineOpen0`, given BFE's service state
/// when it could be read: a stopped BFE explains any failure to connect.
#[must_use]
pub fn engine_open_error(code: SystemCode, bfe: Option<ServiceState>) -> Error {
    let mut err = Error::system(Step::EngineOpen, code, "FwpmEngineOpen0");
    if err.kind != Kind::NotElevated
        && let Some(state) = bfe.filter(|s| *s != ServiceState::Running)
    {
        err.kind = Kind::BfeNotRunning;
        err.message = format!(
            "FwpmEngineOpen0 failed: the Base Filtering Engine service is {} (start it with `sc start bfe`)",
            state.describe()
        );
    }
    err
}

/// Device state for `status`, from the result of opening the device.
#[must_use]
pub fn device_state(open: Result<(), Error>) -> DeviceState {
    match open {
        Ok(()) => DeviceState::Present,
        Err(e) if e.kind == Kind::DriverNotLoaded => DeviceState::Absent,
        Err(e) => DeviceState::Error(e.to_string()),
    }
}

/// Assembles `status` and its exit code.
///
/// The code is 0 when the filter engine could be queried, otherwise the code of that failure (4 when BFE is down, 3 when
/// access was denied). The driver's own state never fails `status`: it is
/// what `status` reports.
#[must_use]
pub fn status_report(
    driver_service: ServiceState,
    bfe_service: ServiceState,
    device: DeviceState,
    wfp: Result<WfpStatus, Error>,
) -> (StatusReport, u8) {
    match wfp {
        Ok(w) => (
            StatusReport {
                driver_service,
                bfe_service,
                device,
                wfp: Some(w),
                wfp_error: None,
            },
            exit::SUCCESS,
        ),
        Err(e) => (
            StatusReport {
                driver_service,
                bfe_service,
                device,
                wfp: None,
                wfp_error: Some(e.to_string()),
            },
            e.exit_code(),
        ),
    }
}

/// The line printed for a failure.
#[must_use]
pub fn error_line(e: &Error) -> String {
    format!("wfpmonctl: error: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::code;

    #[test]
    fn single_shot_prints_once() {
        let mut out = Vec::new();
        let mut calls = 0;
        refresh(
            &mut out,
            None,
            false,
            || {
                calls += 1;
                Ok("a".into())
            },
            |_| panic!("no sleep"),
        )
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(String::from_utf8(out).unwrap(), "a\n");
    }

    #[test]
    fn watch_repeats_until_render_fails() {
        let mut out = Vec::new();
        let mut n = 0;
        let mut slept = Vec::new();
        let err = refresh(
            &mut out,
            Some(2),
            false,
            || {
                n += 1;
                if n == 4 {
                    Err(Error::new(Kind::DriverNotLoaded, "gone"))
                } else {
                    Ok(format!("{{\"n\":{n}}}"))
                }
            },
            |d| slept.push(d),
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert_eq!(slept, vec![Duration::from_secs(2); 3]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"n\":1}\n\n{\"n\":2}\n\n{\"n\":3}\n"
        );
    }

    #[test]
    fn watch_on_a_terminal_clears_the_screen() {
        let mut out = Vec::new();
        let mut n = 0;
        let _ = refresh(
            &mut out,
            Some(1),
            true,
            || {
                n += 1;
                if n == 3 {
                    Err(Error::new(Kind::Other, "stop"))
                } else {
                    Ok("t\n".into())
                }
            },
            |_| {},
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{CLEAR_SCREEN}t\n{CLEAR_SCREEN}t\n")
        );
    }

    #[test]
    fn closed_output_ends_the_loop() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = refresh(&mut Closed, Some(1), false, || Ok("x".into()), |_| {}).unwrap_err();
        assert_eq!(err.kind, Kind::Other);
    }

    #[test]
    fn engine_open_failures() {
        let e = engine_open_error(SystemCode::Win32(code::EPT_S_NOT_REGISTERED), None);
        assert_eq!(e.exit_code(), 4);
        // An unexplained failure while BFE is stopped is blamed on BFE.
        let e = engine_open_error(SystemCode::Win32(1722 + 1), Some(ServiceState::Stopped));
        assert_eq!(e.exit_code(), 4);
        assert!(e.message.contains("stopped"), "{}", e.message);
        let e = engine_open_error(SystemCode::Win32(1723), Some(ServiceState::Running));
        assert_eq!(e.exit_code(), 1);
        // Access denied stays access denied.
        let e = engine_open_error(
            SystemCode::Win32(code::ERROR_ACCESS_DENIED),
            Some(ServiceState::Stopped),
        );
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn status_exit_codes() {
        let w = WfpStatus {
            provider: false,
            sublayer: false,
            callouts: vec![],
            filters: vec![],
        };
        let (r, code) = status_report(
            ServiceState::Stopped,
            ServiceState::Running,
            DeviceState::Absent,
            Ok(w),
        );
        assert_eq!(code, 0);
        assert!(r.wfp.is_some());
        let (r, code) = status_report(
            ServiceState::NotInstalled,
            ServiceState::Stopped,
            device_state(Err(Error::new(Kind::DriverNotLoaded, "x"))),
            Err(engine_open_error(
                SystemCode::Win32(code::EPT_S_NOT_REGISTERED),
                Some(ServiceState::Stopped),
            )),
        );
        assert_eq!(code, 4);
        assert_eq!(r.device, DeviceState::Absent);
        assert!(r.wfp_error.unwrap().contains("Base Filtering Engine"));
        assert_eq!(device_state(Ok(())), DeviceState::Present);
        assert!(matches!(
            device_state(Err(Error::system(
                Step::OpenDevice,
                SystemCode::Win32(5),
                "CreateFileW"
            ))),
            DeviceState::Error(_)
        ));
    }

    #[test]
    fn error_lines() {
        let e = Error::new(Kind::Usage, "bad");
        assert_eq!(error_line(&e), "wfpmonctl: error: bad");
    }
}
