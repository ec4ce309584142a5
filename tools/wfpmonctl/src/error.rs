//! Failures: their diagnosis, remedy and exit code, and the Windows status
//! codes behind them.
//!
//! A failed Windows call becomes an [`Error`] of the [`Kind`] its step and
//! code reveal ([`classify`]); the states of the wfpmon and BFE services
//! then tell the cases apart that one code cannot (a missing control device:
//! driver not installed, or installed but stopped; a failed engine session:
//! BFE stopped, absent, or something else) — see [`Error::device_failure`]
//! and [`Error::engine_failure`]. The system's message text for the code
//! (`FormatMessageW`) is added where the error is reported.

use std::fmt::{self, Write as _};

use windows_sys::Win32::Foundation::{
    E_ACCESSDENIED, ERROR_ACCESS_DENIED, ERROR_ARITHMETIC_OVERFLOW, ERROR_BUSY,
    ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_FUNCTION,
    ERROR_INVALID_PARAMETER, ERROR_INVALID_USER_BUFFER, ERROR_NO_SUCH_DEVICE, ERROR_PATH_NOT_FOUND,
    ERROR_REVISION_MISMATCH, FWP_E_ALREADY_EXISTS,
};
use windows_sys::Win32::System::Rpc::{EPT_S_NOT_REGISTERED, RPC_S_SERVER_UNAVAILABLE};

/// Kind of failure; the discriminant is the process exit code, described
/// in [`EXIT_CODES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Other = 1,
    Usage = 2,
    NotElevated = 3,
    BfeNotRunning = 4,
    DriverStopped = 5,
    AlreadyInstalled = 6,
    ProtocolMismatch = 7,
    Inactive = 8,
    DriverNotInstalled = 9,
    DeviceBusy = 10,
    NotATerminal = 11,
}

/// Every exit code and its meaning, as `--help` lists them.
pub const EXIT_CODES: [(Kind, &str); 11] = [
    (
        Kind::Other,
        "any other failure (the Windows code and its text are printed)",
    ),
    (
        Kind::Usage,
        "usage error (bad option, filter, address, CIDR block, unit or time)",
    ),
    (Kind::NotElevated, "not elevated: access denied"),
    (
        Kind::BfeNotRunning,
        "the Base Filtering Engine (BFE) is not running or absent",
    ),
    (
        Kind::DriverStopped,
        "the wfpmon driver is installed but not running (or stopped during events --follow)",
    ),
    (
        Kind::AlreadyInstalled,
        "wfpmon's filter-engine objects are already installed",
    ),
    (
        Kind::ProtocolMismatch,
        "the driver and wfpmonctl speak different control-protocol versions",
    ),
    (
        Kind::Inactive,
        "status --check: monitoring not fully active (objects missing, callouts not registered)",
    ),
    (
        Kind::DriverNotInstalled,
        "the wfpmon driver is not installed",
    ),
    (
        Kind::DeviceBusy,
        "the driver stayed busy with another client's query",
    ),
    (
        Kind::NotATerminal,
        "top: standard output is not a terminal, or a console without VT sequences (use flows --watch)",
    ),
];

/// Remedies, one per case.
pub const ELEVATE: &str = "run wfpmonctl as administrator (from an elevated prompt)";
pub const INSTALL_DRIVER: &str = "install the driver package from an elevated prompt with \
                              `pnputil /add-driver wfpmon.inf /install`, then start it with `sc.exe start wfpmon`";
pub const START_DRIVER: &str = "start it from an elevated prompt with `sc.exe start wfpmon`";
pub const START_BFE: &str = "start it from an elevated prompt with `sc.exe start bfe` \
                         (if it is disabled: `sc.exe config bfe start= auto` first)";
pub const RESTORE_BFE: &str =
    "wfpmon needs the Windows Filtering Platform; BFE is part of Windows and has to be restored";
pub const SAME_BUILD: &str = "install the driver and wfpmonctl from the same build";
pub const UNINSTALL: &str = "`wfpmonctl uninstall` removes them";
pub const RETRY: &str = "try again in a moment";

impl Kind {
    /// The name of the case in `status --json` (`diagnosis`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Other => "other",
            Self::Usage => "usage",
            Self::NotElevated => "not_elevated",
            Self::BfeNotRunning => "bfe_not_running",
            Self::DriverStopped => "driver_stopped",
            Self::AlreadyInstalled => "already_installed",
            Self::ProtocolMismatch => "protocol_mismatch",
            Self::Inactive => "inactive",
            Self::DriverNotInstalled => "driver_not_installed",
            Self::DeviceBusy => "device_busy",
            Self::NotATerminal => "not_a_terminal",
        }
    }

    /// What a failure of this kind means, and what to do about it, when
    /// nothing more precise is known.
    const fn diagnosis(self) -> Option<(&'static str, &'static str)> {
        Some(match self {
            Self::NotElevated => ("access denied", ELEVATE),
            Self::BfeNotRunning => (
                "the Base Filtering Engine (service BFE) is not running",
                START_BFE,
            ),
            Self::DriverStopped => ("the wfpmon driver is not running", START_DRIVER),
            Self::DriverNotInstalled => ("the wfpmon driver is not installed", INSTALL_DRIVER),
            Self::AlreadyInstalled => (
                "wfpmon's filter-engine objects are already installed",
                UNINSTALL,
            ),
            Self::ProtocolMismatch => (
                "the wfpmon driver refused this wfpmonctl's request (they come from different builds)",
                SAME_BUILD,
            ),
            Self::DeviceBusy => (
                "the wfpmon driver stayed busy with another client's query",
                RETRY,
            ),
            Self::Other | Self::Usage | Self::Inactive | Self::NotATerminal => return None,
        })
    }
}

/// The "Exit codes:" section of `--help`.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:\n   0  success\n");
    for (kind, meaning) in EXIT_CODES {
        let _ = writeln!(text, "  {:>2}  {meaning}", kind as u8);
    }
    text
}

/// A status code returned by a Windows API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SystemCode {
    Win32(u32),
    /// An HRESULT that is not a wrapped Win32 code (e.g. `FWP_E_*`).
    HResult(i32),
    /// An `NTSTATUS` (an HRESULT with the `FACILITY_NT_BIT` carries one).
    NtStatus(u32),
}

/// `FACILITY_NT_BIT` (winerror.h): `HRESULT_FROM_NT(x)` is `x | FACILITY_NT_BIT`.
const FACILITY_NT_BIT: u32 = 0x1000_0000;

impl SystemCode {
    /// Classifies the `DWORD` an `Fwpm*` function returned: an HRESULT when
    /// its top bit is set (unwrapping `HRESULT_FROM_WIN32` and
    /// `HRESULT_FROM_NT`), else Win32.
    pub const fn from_dword(value: u32) -> Self {
        if value & 0xFFFF_0000 == 0x8007_0000 {
            Self::Win32(value & 0xFFFF)
        } else if value & 0x8000_0000 != 0 && value & FACILITY_NT_BIT != 0 {
            Self::NtStatus(value & !FACILITY_NT_BIT)
        } else if value & 0x8000_0000 != 0 {
            Self::HResult(value.cast_signed())
        } else {
            Self::Win32(value)
        }
    }

    /// Whether an `Fwpm*ByKey0` failure means "no such object".
    pub const fn is_not_found(self) -> bool {
        use windows_sys::Win32::Foundation as f;
        matches!(
            self,
            Self::HResult(
                f::FWP_E_CALLOUT_NOT_FOUND
                    | f::FWP_E_FILTER_NOT_FOUND
                    | f::FWP_E_PROVIDER_NOT_FOUND
                    | f::FWP_E_SUBLAYER_NOT_FOUND
                    | f::FWP_E_NOT_FOUND
            )
        )
    }
}

impl fmt::Display for SystemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Win32(c) => write!(f, "Win32 error {c} (0x{c:08X})"),
            Self::HResult(c) => write!(f, "HRESULT 0x{:08X}", c.cast_unsigned()),
            Self::NtStatus(c) => write!(f, "NTSTATUS 0x{c:08X}"),
        }
    }
}

/// What the tool was doing when a Windows call failed: the same code means
/// different things in different steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    Engine,
    Add,
    OpenDevice,
    DeviceControl,
    ServiceControl,
}

/// Maps a failed call to the kind of failure it reveals.
pub const fn classify(step: Step, code: SystemCode) -> Kind {
    const EPT: u32 = EPT_S_NOT_REGISTERED.cast_unsigned();
    const RPC: u32 = RPC_S_SERVER_UNAVAILABLE.cast_unsigned();
    use SystemCode::Win32;
    match (step, code) {
        (_, Win32(ERROR_ACCESS_DENIED) | SystemCode::HResult(E_ACCESSDENIED)) => Kind::NotElevated,
        (Step::Engine | Step::Add, Win32(EPT | RPC)) => Kind::BfeNotRunning,
        (Step::Add, SystemCode::HResult(FWP_E_ALREADY_EXISTS)) => Kind::AlreadyInstalled,
        (
            Step::OpenDevice,
            Win32(ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND | ERROR_NO_SUCH_DEVICE),
        ) => Kind::DriverStopped,
        (Step::OpenDevice | Step::DeviceControl, Win32(ERROR_BUSY)) => Kind::DeviceBusy,
        // The driver refused a request encoded with the shared protocol
        // definitions: its idea of the protocol differs
        // (STATUS_REVISION_MISMATCH: another version; the others: another
        // layout).
        (
            Step::DeviceControl,
            Win32(
                ERROR_INVALID_FUNCTION
                | ERROR_INVALID_PARAMETER
                | ERROR_INSUFFICIENT_BUFFER
                | ERROR_ARITHMETIC_OVERFLOW
                | ERROR_REVISION_MISMATCH
                | ERROR_INVALID_USER_BUFFER,
            ),
        ) => Kind::ProtocolMismatch,
        _ => Kind::Other,
    }
}

/// The Windows call behind a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// The call, as the SDK names it (`FwpmEngineOpen0`,
    /// `DeviceIoControl(IOCTL_WFPMON_LIST_FLOWS)`).
    pub call: String,
    pub code: SystemCode,
    /// The system's message text for `code` (`FormatMessageW`), once known.
    pub text: Option<String>,
}

/// A failure ready to be reported: kind (hence exit code), what is wrong,
/// what to do, and the Windows call and code behind it when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub remedy: Option<String>,
    pub cause: Option<Cause>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            remedy: None,
            cause: None,
        }
    }

    /// `call`, made while `action`, failed with `code` during `step`: the
    /// diagnosis and remedy of the kind [`classify`] gives, or (another
    /// failure) "`action` failed".
    pub fn system(step: Step, code: SystemCode, action: &str, call: impl Into<String>) -> Self {
        let kind = classify(step, code);
        let (message, remedy) = kind.diagnosis().map_or_else(
            || (format!("{action} failed"), None),
            |(m, r)| (m.to_owned(), Some(r.to_owned())),
        );
        Self {
            kind,
            message,
            remedy,
            cause: Some(Cause {
                call: call.into(),
                code,
                text: None,
            }),
        }
    }

    /// A failure of `kind` without a Windows code: `message`, `remedy`.
    pub fn with_remedy(kind: Kind, message: impl Into<String>, remedy: &str) -> Self {
        Self {
            remedy: Some(remedy.to_owned()),
            ..Self::new(kind, message)
        }
    }

    /// The same failure diagnosed as `kind`: `message`, `remedy`.
    #[must_use]
    pub fn diagnosed(self, kind: Kind, message: impl Into<String>, remedy: &str) -> Self {
        Self {
            kind,
            message: message.into(),
            remedy: Some(remedy.to_owned()),
            ..self
        }
    }

    /// The Windows code behind the failure.
    pub fn code(&self) -> Option<SystemCode> {
        self.cause.as_ref().map(|c| c.code)
    }

    /// Opening the control device failed with `self`; `driver` is the
    /// state of the wfpmon service (`not_installed` or a service state).
    /// A missing device is "not installed" or "installed but not running".
    #[must_use]
    pub fn device_failure(self, driver: Result<&str, &Self>) -> Self {
        match (self.kind, driver) {
            (Kind::DriverStopped, Ok("not_installed")) => {
                let message = "the wfpmon driver is not installed";
                self.diagnosed(Kind::DriverNotInstalled, message, INSTALL_DRIVER)
            }
            (Kind::DriverStopped, Ok("running")) => {
                let message = "the wfpmon service is running but its control device is absent";
                let remedy = "restart it from an elevated prompt with `sc.exe stop wfpmon` and `sc.exe start wfpmon`";
                self.diagnosed(Kind::DriverStopped, message, remedy)
            }
            (Kind::DriverStopped, Ok(state)) => {
                let state = state.replace('_', " ");
                let message =
                    format!("the wfpmon driver is installed but not running (service {state})");
                self.diagnosed(Kind::DriverStopped, message, START_DRIVER)
            }
            _ => self,
        }
    }

    /// Opening a filter-engine session failed with `self`; `bfe` is the
    /// state of the BFE service. Unless access was denied, a BFE that is
    /// not running (or absent) is the diagnosis, whatever the code.
    #[must_use]
    pub fn engine_failure(self, bfe: Result<&str, &Self>) -> Self {
        match (self.kind, bfe) {
            (Kind::NotElevated, _) | (_, Ok("running") | Err(_)) => self,
            (_, Ok("not_installed")) => {
                let message =
                    "the Base Filtering Engine service (BFE) does not exist on this system";
                self.diagnosed(Kind::BfeNotRunning, message, RESTORE_BFE)
            }
            (_, Ok(state)) => {
                let state = state.replace('_', " ");
                let message = format!(
                    "the Base Filtering Engine (service BFE) is not running (service {state})"
                );
                self.diagnosed(Kind::BfeNotRunning, message, START_BFE)
            }
        }
    }

    /// Adds the system's message text for the code (`text` gives it).
    #[must_use]
    pub fn described(mut self, text: &mut impl FnMut(SystemCode) -> Option<String>) -> Self {
        if let Some(cause) = &mut self.cause
            && cause.text.is_none()
        {
            cause.text = text(cause.code);
        }
        self
    }

    pub const fn exit_code(&self) -> u8 {
        self.kind as u8
    }
}

impl fmt::Display for Error {
    /// `message: remedy [call: code: text]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(remedy) = &self.remedy {
            write!(f, ": {remedy}")?;
        }
        if let Some(c) = &self.cause {
            write!(f, " [{} failed: {}", c.call, c.code)?;
            if let Some(text) = &c.text {
                write!(f, ": {text}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use windows_sys::Win32::Foundation::{FWP_E_FILTER_NOT_FOUND, FWP_E_IN_USE};

    #[test]
    fn exit_codes_are_distinct_and_in_the_help() {
        let codes: HashSet<u8> = EXIT_CODES.iter().map(|(k, _)| *k as u8).collect();
        for (i, (kind, _)) in EXIT_CODES.iter().enumerate() {
            assert_eq!(*kind as usize, i + 1, "the table is indexed by code");
        }
        assert_eq!(codes.len(), EXIT_CODES.len());
        assert!(!codes.contains(&0));
        assert_eq!(Kind::Usage as u8, 2, "clap's usage-error code");
        let help = exit_codes_help();
        for (kind, meaning) in EXIT_CODES {
            assert!(
                help.contains(&format!("\n  {:>2}  {meaning}\n", kind as u8)),
                "{help}"
            );
        }
        let names: HashSet<&str> = EXIT_CODES.iter().map(|(k, _)| k.name()).collect();
        assert_eq!(names.len(), EXIT_CODES.len());
    }

    #[test]
    fn dword_forms() {
        assert_eq!(SystemCode::from_dword(5), SystemCode::Win32(5));
        assert_eq!(SystemCode::from_dword(0x8007_0005), SystemCode::Win32(5));
        assert_eq!(
            SystemCode::from_dword(FWP_E_ALREADY_EXISTS.cast_unsigned()),
            SystemCode::HResult(FWP_E_ALREADY_EXISTS)
        );
        // HRESULT_FROM_NT(STATUS_REVISION_MISMATCH)
        assert_eq!(
            SystemCode::from_dword(0xD000_0059),
            SystemCode::NtStatus(0xC000_0059)
        );
        assert!(SystemCode::from_dword(FWP_E_FILTER_NOT_FOUND.cast_unsigned()).is_not_found());
        assert!(!SystemCode::from_dword(FWP_E_IN_USE.cast_unsigned()).is_not_found());
        assert!(!SystemCode::Win32(ERROR_FILE_NOT_FOUND).is_not_found());
        assert_eq!(
            SystemCode::HResult(FWP_E_ALREADY_EXISTS).to_string(),
            "HRESULT 0x80320009"
        );
        assert_eq!(
            SystemCode::NtStatus(0xC000_0059).to_string(),
            "NTSTATUS 0xC0000059"
        );
    }

    #[test]
    fn classification() {
        let w = SystemCode::Win32;
        for step in [
            Step::Engine,
            Step::Add,
            Step::OpenDevice,
            Step::DeviceControl,
        ] {
            assert_eq!(classify(step, w(ERROR_ACCESS_DENIED)), Kind::NotElevated);
            assert_eq!(
                classify(step, SystemCode::from_dword(0x8007_0005)),
                Kind::NotElevated
            );
        }
        assert_eq!(classify(Step::Engine, w(1753)), Kind::BfeNotRunning);
        assert_eq!(classify(Step::Add, w(1722)), Kind::BfeNotRunning);
        assert_eq!(classify(Step::OpenDevice, w(1753)), Kind::Other);
        let exists = SystemCode::HResult(FWP_E_ALREADY_EXISTS);
        assert_eq!(classify(Step::Add, exists), Kind::AlreadyInstalled);
        assert_eq!(classify(Step::Engine, exists), Kind::Other);
        assert_eq!(classify(Step::OpenDevice, w(2)), Kind::DriverStopped);
        assert_eq!(classify(Step::ServiceControl, w(2)), Kind::Other);
        assert_eq!(
            classify(Step::DeviceControl, w(1306)),
            Kind::ProtocolMismatch
        );
        assert_eq!(
            classify(Step::DeviceControl, w(1784)),
            Kind::ProtocolMismatch
        );
        assert_eq!(classify(Step::DeviceControl, w(170)), Kind::DeviceBusy);
        assert_eq!(classify(Step::Engine, w(170)), Kind::Other);
    }

    #[test]
    fn messages_carry_diagnosis_remedy_call_code_and_text() {
        let e = Error::system(
            Step::Add,
            SystemCode::HResult(FWP_E_ALREADY_EXISTS),
            "adding the filter-engine objects",
            "FwpmProviderAdd0",
        );
        assert_eq!(e.exit_code(), 6);
        assert_eq!(
            e.to_string(),
            "wfpmon's filter-engine objects are already installed: `wfpmonctl uninstall` removes them \
             [FwpmProviderAdd0 failed: HRESULT 0x80320009]"
        );
        let e = Error::system(
            Step::Engine,
            SystemCode::Win32(31),
            "reading the filter-engine objects",
            "FwpmCalloutGetByKey0",
        )
        .described(&mut |c| {
            (c == SystemCode::Win32(31))
                .then(|| "A device attached to the system is not functioning.".into())
        });
        assert_eq!(
            e.to_string(),
            "reading the filter-engine objects failed [FwpmCalloutGetByKey0 failed: Win32 error 31 (0x0000001F): \
             A device attached to the system is not functioning.]"
        );
        assert!(!e.to_string().contains("::"), "no module paths");
    }

    #[test]
    fn a_missing_device_is_told_apart_by_the_service() {
        let missing = || {
            Error::system(
                Step::OpenDevice,
                SystemCode::Win32(ERROR_FILE_NOT_FOUND),
                "opening the control device",
                "CreateFileW",
            )
        };
        let e = missing().device_failure(Ok("not_installed"));
        assert_eq!(e.kind, Kind::DriverNotInstalled);
        assert_eq!(e.exit_code(), 9);
        assert!(
            e.to_string()
                .contains("pnputil /add-driver wfpmon.inf /install"),
            "{e}"
        );
        let e = missing().device_failure(Ok("stop_pending"));
        assert_eq!(e.exit_code(), 5);
        assert!(
            e.to_string().starts_with(
                "the wfpmon driver is installed but not running (service stop pending): start it"
            ),
            "{e}"
        );
        let scm = Error::new(Kind::Other, "scm");
        assert_eq!(
            missing().device_failure(Err(&scm)),
            missing(),
            "the code alone"
        );
        let denied = Error::system(
            Step::OpenDevice,
            SystemCode::Win32(ERROR_ACCESS_DENIED),
            "opening the control device",
            "CreateFileW",
        );
        let e = denied.clone().device_failure(Ok("running"));
        assert_eq!((e.exit_code(), e), (3, denied));
    }

    #[test]
    fn a_failed_session_is_told_apart_by_bfe() {
        let failed = |code| {
            Error::system(
                Step::Engine,
                SystemCode::Win32(code),
                "opening a filter-engine session",
                "FwpmEngineOpen0",
            )
        };
        // RPC_S_CANNOT_SUPPORT: no BFE code, but BFE is stopped.
        let e = failed(1764).engine_failure(Ok("stopped"));
        assert_eq!(e.exit_code(), 4);
        assert!(e.to_string().contains("sc.exe start bfe"), "{e}");
        let e = failed(1753).engine_failure(Ok("not_installed"));
        assert_eq!(e.exit_code(), 4);
        assert!(e.message.contains("does not exist"), "{e}");
        assert_eq!(failed(1753).engine_failure(Ok("running")).exit_code(), 4);
        assert_eq!(failed(1764).engine_failure(Ok("running")).exit_code(), 1);
        assert_eq!(failed(5).engine_failure(Ok("stopped")).exit_code(), 3);
    }
}
