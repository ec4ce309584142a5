//! Exit codes, error kinds, and the classification of Windows error codes.
//!
//! Every failure of `wfpmonctl` ends in exactly one [`Kind`], and every kind
//! has its own process exit code, so scripts can tell "run it elevated" from
//! "start BFE" from "load the driver" without parsing messages:
//!
//! | code | kind | typical cause |
//! |-----:|------|---------------|
//! | 0 | — | success |
//! | 1 | [`Kind::Other`] | any other failure; the Win32/HRESULT code is printed |
//! | 2 | [`Kind::Usage`] | bad command line (clap) or an invalid option combination |
//! | 3 | [`Kind::NotElevated`] | `ERROR_ACCESS_DENIED`, or the token is not elevated |
//! | 4 | [`Kind::BfeNotRunning`] | `EPT_S_NOT_REGISTERED` / `RPC_S_SERVER_UNAVAILABLE` from the filter engine, or the BFE service is not running |
//! | 5 | [`Kind::DriverNotLoaded`] | `\\.\GLOBALROOT\Device\WfpMon` does not exist |
//! | 6 | [`Kind::AlreadyInstalled`] | `FWP_E_ALREADY_EXISTS` while installing |
//! | 7 | [`Kind::ProtocolMismatch`] | the driver speaks another control-protocol version or layout |
//!
//! Everything here is pure and platform-independent: the Windows constants
//! the classification needs are declared in [`code`] as plain numbers, and the
//! `windows` module asserts at compile time that they equal the `windows`
//! crate's definitions.

use std::fmt;

/// Exit code of a successful run.
pub const SUCCESS: u8 = 0;

/// The exit-code table, shown at the end of `wfpmonctl --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  any other failure (the Win32 or HRESULT code is printed)
  2  usage error: bad arguments or an invalid option combination
  3  not elevated: access denied, run from an elevated (administrator) prompt
  4  the Base Filtering Engine (BFE service) is not running
  5  the wfpmon driver is not loaded (its control device does not exist)
  6  wfpmon's filter-engine objects are already installed
  7  the driver speaks another control-protocol version than this tool";

/// What went wrong, at the granularity scripts care about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Bad command line or invalid option combination.
    Usage,
    /// The caller lacks the rights (not elevated, or access denied).
    NotElevated,
    /// The Base Filtering Engine is not running.
    BfeNotRunning,
    /// The driver's control device does not exist.
    DriverNotLoaded,
    /// `install` found wfpmon's objects already in the filter engine.
    AlreadyInstalled,
    /// The driver and this tool disagree on the control protocol.
    ProtocolMismatch,
    /// Anything else.
    Other,
}

impl Kind {
    /// Every kind, in exit-code order (for tests and documentation).
    pub const ALL: [Self; 7] = [
        Self::Other,
        Self::Usage,
        Self::NotElevated,
        Self::BfeNotRunning,
        Self::DriverNotLoaded,
        Self::AlreadyInstalled,
        Self::ProtocolMismatch,
    ];

    /// The process exit code of this kind.
    #[must_use]
    pub const fn exit_code(self) -> u8 {
        match self {
            Self::Other => 1,
            Self::Usage => 2,
            Self::NotElevated => 3,
            Self::BfeNotRunning => 4,
            Self::DriverNotLoaded => 5,
            Self::AlreadyInstalled => 6,
            Self::ProtocolMismatch => 7,
        }
    }
}

/// Windows status codes the classification recognises, as plain numbers.
///
/// Win32 error codes are small positive numbers; HRESULTs have the severity
/// bit set. The filter-engine functions (`Fwpm*`) return either as a `DWORD`.
pub mod code {
    /// `ERROR_INVALID_FUNCTION` (from `STATUS_INVALID_DEVICE_REQUEST`: unknown IOCTL).
    pub const ERROR_INVALID_FUNCTION: u32 = 1;
    /// `ERROR_FILE_NOT_FOUND`.
    pub const ERROR_FILE_NOT_FOUND: u32 = 2;
    /// `ERROR_PATH_NOT_FOUND`.
    pub const ERROR_PATH_NOT_FOUND: u32 = 3;
    /// `ERROR_ACCESS_DENIED`.
    pub const ERROR_ACCESS_DENIED: u32 = 5;
    /// `ERROR_INVALID_PARAMETER` (from `STATUS_INVALID_PARAMETER`).
    pub const ERROR_INVALID_PARAMETER: u32 = 87;
    /// `ERROR_INSUFFICIENT_BUFFER` (from `STATUS_BUFFER_TOO_SMALL`).
    pub const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
    /// `ERROR_MORE_DATA` (from the warning `STATUS_BUFFER_OVERFLOW`: data *was* returned).
    pub const ERROR_MORE_DATA: u32 = 234;
    /// `ERROR_NO_SUCH_DEVICE`.
    pub const ERROR_NO_SUCH_DEVICE: u32 = 433;
    /// `ERROR_ARITHMETIC_OVERFLOW` (from `STATUS_INTEGER_OVERFLOW`).
    pub const ERROR_ARITHMETIC_OVERFLOW: u32 = 534;
    /// `ERROR_SERVICE_DOES_NOT_EXIST`.
    pub const ERROR_SERVICE_DOES_NOT_EXIST: u32 = 1060;
    /// `ERROR_REVISION_MISMATCH` (from `STATUS_REVISION_MISMATCH`).
    pub const ERROR_REVISION_MISMATCH: u32 = 1306;
    /// `RPC_S_SERVER_UNAVAILABLE`.
    pub const RPC_S_SERVER_UNAVAILABLE: u32 = 1722;
    /// `EPT_S_NOT_REGISTERED`: what `FwpmEngineOpen0` returns while BFE is stopped.
    pub const EPT_S_NOT_REGISTERED: u32 = 1753;
    /// `ERROR_INVALID_USER_BUFFER` (from `STATUS_INVALID_BUFFER_SIZE`).
    pub const ERROR_INVALID_USER_BUFFER: u32 = 1784;
    /// `E_ACCESSDENIED` (`HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)`).
    pub const E_ACCESSDENIED: u32 = 0x8007_0005;
    /// `FWP_E_CALLOUT_NOT_FOUND`.
    pub const FWP_E_CALLOUT_NOT_FOUND: u32 = 0x8032_0001;
    /// `FWP_E_FILTER_NOT_FOUND`.
    pub const FWP_E_FILTER_NOT_FOUND: u32 = 0x8032_0003;
    /// `FWP_E_PROVIDER_NOT_FOUND`.
    pub const FWP_E_PROVIDER_NOT_FOUND: u32 = 0x8032_0005;
    /// `FWP_E_SUBLAYER_NOT_FOUND`.
    pub const FWP_E_SUBLAYER_NOT_FOUND: u32 = 0x8032_0007;
    /// `FWP_E_NOT_FOUND`.
    pub const FWP_E_NOT_FOUND: u32 = 0x8032_0008;
    /// `FWP_E_ALREADY_EXISTS`.
    pub const FWP_E_ALREADY_EXISTS: u32 = 0x8032_0009;
    /// `FWP_E_IN_USE`: the object is still referenced by another object.
    pub const FWP_E_IN_USE: u32 = 0x8032_000A;
    /// `FWP_E_INVALID_FLAGS`.
    pub const FWP_E_INVALID_FLAGS: u32 = 0x8032_001E;
    /// `FWP_E_LIFETIME_MISMATCH`: an object references one of shorter lifetime.
    pub const FWP_E_LIFETIME_MISMATCH: u32 = 0x8032_0016;
}

/// A status code returned by a Windows API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SystemCode {
    /// A Win32 error code (`GetLastError`, or a `DWORD` return value below `0x8000_0000`).
    Win32(u32),
    /// An HRESULT that is not a wrapped Win32 code (e.g. `FWP_E_*`).
    HResult(u32),
}

impl SystemCode {
    /// Classifies the `DWORD` an `Fwpm*` function returned (non-zero).
    #[must_use]
    pub const fn from_dword(value: u32) -> Self {
        if value & 0x8000_0000 == 0 {
            Self::Win32(value)
        } else {
            Self::from_hresult(value)
        }
    }

    /// Classifies an HRESULT, unwrapping `HRESULT_FROM_WIN32` values
    /// (facility 7) to their Win32 code.
    #[must_use]
    pub const fn from_hresult(hr: u32) -> Self {
        if hr & 0xFFFF_0000 == 0x8007_0000 {
            Self::Win32(hr & 0xFFFF)
        } else {
            Self::HResult(hr)
        }
    }

    /// Whether this is the given Win32 code, in either representation.
    #[must_use]
    pub const fn is_win32(self, win32: u32) -> bool {
        match self {
            Self::Win32(c) => c == win32,
            Self::HResult(_) => false,
        }
    }

    /// Whether this is the given HRESULT (`FWP_E_*`).
    #[must_use]
    pub const fn is_hresult(self, hr: u32) -> bool {
        match self {
            Self::HResult(c) => c == hr,
            Self::Win32(_) => false,
        }
    }

    /// The symbolic name of the codes this tool knows, for messages.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        use code::{
            EPT_S_NOT_REGISTERED, ERROR_ACCESS_DENIED, ERROR_ARITHMETIC_OVERFLOW,
            ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_FUNCTION,
            ERROR_INVALID_PARAMETER, ERROR_INVALID_USER_BUFFER, ERROR_MORE_DATA,
            ERROR_NO_SUCH_DEVICE, ERROR_PATH_NOT_FOUND, ERROR_REVISION_MISMATCH,
            ERROR_SERVICE_DOES_NOT_EXIST, FWP_E_ALREADY_EXISTS, FWP_E_CALLOUT_NOT_FOUND,
            FWP_E_FILTER_NOT_FOUND, FWP_E_IN_USE, FWP_E_INVALID_FLAGS, FWP_E_LIFETIME_MISMATCH,
            FWP_E_NOT_FOUND, FWP_E_PROVIDER_NOT_FOUND, FWP_E_SUBLAYER_NOT_FOUND,
            RPC_S_SERVER_UNAVAILABLE,
        };
        Some(match self {
            Self::Win32(ERROR_INVALID_FUNCTION) => "ERROR_INVALID_FUNCTION",
            Self::Win32(ERROR_FILE_NOT_FOUND) => "ERROR_FILE_NOT_FOUND",
            Self::Win32(ERROR_PATH_NOT_FOUND) => "ERROR_PATH_NOT_FOUND",
            Self::Win32(ERROR_ACCESS_DENIED) => "ERROR_ACCESS_DENIED",
            Self::Win32(ERROR_INVALID_PARAMETER) => "ERROR_INVALID_PARAMETER",
            Self::Win32(ERROR_INSUFFICIENT_BUFFER) => "ERROR_INSUFFICIENT_BUFFER",
            Self::Win32(ERROR_MORE_DATA) => "ERROR_MORE_DATA",
            Self::Win32(ERROR_NO_SUCH_DEVICE) => "ERROR_NO_SUCH_DEVICE",
            Self::Win32(ERROR_ARITHMETIC_OVERFLOW) => "ERROR_ARITHMETIC_OVERFLOW",
            Self::Win32(ERROR_SERVICE_DOES_NOT_EXIST) => "ERROR_SERVICE_DOES_NOT_EXIST",
            Self::Win32(ERROR_REVISION_MISMATCH) => "ERROR_REVISION_MISMATCH",
            Self::Win32(RPC_S_SERVER_UNAVAILABLE) => "RPC_S_SERVER_UNAVAILABLE",
            Self::Win32(EPT_S_NOT_REGISTERED) => "EPT_S_NOT_REGISTERED",
            Self::Win32(ERROR_INVALID_USER_BUFFER) => "ERROR_INVALID_USER_BUFFER",
            Self::HResult(FWP_E_CALLOUT_NOT_FOUND) => "FWP_E_CALLOUT_NOT_FOUND",
            Self::HResult(FWP_E_FILTER_NOT_FOUND) => "FWP_E_FILTER_NOT_FOUND",
            Self::HResult(FWP_E_PROVIDER_NOT_FOUND) => "FWP_E_PROVIDER_NOT_FOUND",
            Self::HResult(FWP_E_SUBLAYER_NOT_FOUND) => "FWP_E_SUBLAYER_NOT_FOUND",
            Self::HResult(FWP_E_NOT_FOUND) => "FWP_E_NOT_FOUND",
            Self::HResult(FWP_E_ALREADY_EXISTS) => "FWP_E_ALREADY_EXISTS",
            Self::HResult(FWP_E_IN_USE) => "FWP_E_IN_USE",
            Self::HResult(FWP_E_INVALID_FLAGS) => "FWP_E_INVALID_FLAGS",
            Self::HResult(FWP_E_LIFETIME_MISMATCH) => "FWP_E_LIFETIME_MISMATCH",
            _ => return None,
        })
    }

    /// Whether an `Fwpm*DeleteByKey0` failure means "the object is not there".
    #[must_use]
    pub const fn is_not_found(self) -> bool {
        use code::{
            FWP_E_CALLOUT_NOT_FOUND, FWP_E_FILTER_NOT_FOUND, FWP_E_NOT_FOUND,
            FWP_E_PROVIDER_NOT_FOUND, FWP_E_SUBLAYER_NOT_FOUND,
        };
        matches!(
            self,
            Self::HResult(
                FWP_E_CALLOUT_NOT_FOUND
                    | FWP_E_FILTER_NOT_FOUND
                    | FWP_E_PROVIDER_NOT_FOUND
                    | FWP_E_SUBLAYER_NOT_FOUND
                    | FWP_E_NOT_FOUND
            )
        )
    }
}

impl fmt::Display for SystemCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Win32(c) => write!(f, "Win32 error {c} (0x{c:08X})")?,
            Self::HResult(c) => write!(f, "HRESULT 0x{c:08X}")?,
        }
        if let Some(name) = self.name() {
            write!(f, " {name}")?;
        }
        Ok(())
    }
}

/// What the tool was doing when a Windows call failed; the same code can
/// mean different things in different steps (`ERROR_FILE_NOT_FOUND` opening
/// the device means the driver is not loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// `FwpmEngineOpen0`.
    EngineOpen,
    /// `FwpmTransactionBegin0` / `Commit0` / `Abort0`.
    Transaction,
    /// An `Fwpm*Add0` call.
    Add,
    /// An `Fwpm*DeleteByKey0` call.
    Delete,
    /// An `Fwpm*GetByKey0` call.
    Query,
    /// `CreateFileW` on the control device.
    OpenDevice,
    /// `DeviceIoControl` on the control device.
    DeviceControl,
    /// A service-control-manager call.
    ServiceControl,
    /// Reading the process token.
    Token,
}

/// Maps a failed call to the kind of failure it reveals.
#[must_use]
pub const fn classify(step: Step, code: SystemCode) -> Kind {
    use code::{
        E_ACCESSDENIED, EPT_S_NOT_REGISTERED, ERROR_ACCESS_DENIED, ERROR_ARITHMETIC_OVERFLOW,
        ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_FUNCTION,
        ERROR_INVALID_PARAMETER, ERROR_INVALID_USER_BUFFER, ERROR_NO_SUCH_DEVICE,
        ERROR_PATH_NOT_FOUND, ERROR_REVISION_MISMATCH, FWP_E_ALREADY_EXISTS,
        RPC_S_SERVER_UNAVAILABLE,
    };
    match (step, code) {
        (_, SystemCode::Win32(ERROR_ACCESS_DENIED) | SystemCode::HResult(E_ACCESSDENIED)) => {
            Kind::NotElevated
        }
        (
            Step::EngineOpen | Step::Transaction | Step::Add | Step::Delete | Step::Query,
            SystemCode::Win32(EPT_S_NOT_REGISTERED | RPC_S_SERVER_UNAVAILABLE),
        ) => Kind::BfeNotRunning,
        (Step::Add, SystemCode::HResult(FWP_E_ALREADY_EXISTS)) => Kind::AlreadyInstalled,
        (
            Step::OpenDevice,
            SystemCode::Win32(ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND | ERROR_NO_SUCH_DEVICE),
        ) => Kind::DriverNotLoaded,
        // The driver refused a request this tool encoded with the shared
        // protocol definitions: its idea of the protocol differs.
        (
            Step::DeviceControl,
            SystemCode::Win32(
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

/// A failure, ready to be reported: its kind (hence exit code), a message
/// that says what to do, and the Windows code behind it when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Kind of failure, which fixes the exit code.
    pub kind: Kind,
    /// Human-readable explanation.
    pub message: String,
    /// The Windows status code, when a Windows call failed.
    pub system: Option<SystemCode>,
}

impl Error {
    /// A failure without a Windows code.
    #[must_use]
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            system: None,
        }
    }

    /// A failed Windows call during `step`, described by `what` (e.g.
    /// "`FwpmFilterAdd0` (wfpmon-stream-v4)"). The kind comes from [`classify`]
    /// and the message gains a hint for the kinds that have a remedy.
    #[must_use]
    pub fn system(step: Step, code: SystemCode, what: &str) -> Self {
        let kind = classify(step, code);
        let hint = match kind {
            Kind::NotElevated => "; run wfpmonctl from an elevated (administrator) prompt",
            Kind::BfeNotRunning => {
                "; the Base Filtering Engine is not running (start it with `sc start bfe`)"
            }
            Kind::DriverNotLoaded => {
                "; the wfpmon driver is not loaded (start it with `sc start wfpmon`)"
            }
            Kind::AlreadyInstalled => {
                "; wfpmon's filter-engine objects are already installed (run `wfpmonctl uninstall` first)"
            }
            Kind::ProtocolMismatch => {
                "; the driver does not understand this tool's requests: driver and wfpmonctl come from different builds"
            }
            Kind::Usage | Kind::Other => "",
        };
        Self {
            kind,
            message: format!("{what} failed{hint}"),
            system: Some(code),
        }
    }

    /// The process exit code.
    #[must_use]
    pub const fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = self.system {
            write!(f, " [{code}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let codes: HashSet<u8> = Kind::ALL.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes.len(), Kind::ALL.len());
        assert!(!codes.contains(&SUCCESS));
        for kind in Kind::ALL {
            let line = format!("\n  {}  ", kind.exit_code());
            assert!(
                EXIT_CODES_HELP.contains(&line),
                "{kind:?} missing from the help table"
            );
        }
        // The code clap uses for usage errors.
        assert_eq!(Kind::Usage.exit_code(), 2);
    }

    #[test]
    fn dword_and_hresult_forms_normalise() {
        assert_eq!(SystemCode::from_dword(5), SystemCode::Win32(5));
        assert_eq!(SystemCode::from_dword(0x8007_0005), SystemCode::Win32(5));
        assert_eq!(
            SystemCode::from_hresult(0x8007_06D9),
            SystemCode::Win32(code::EPT_S_NOT_REGISTERED)
        );
        assert_eq!(
            SystemCode::from_dword(code::FWP_E_ALREADY_EXISTS),
            SystemCode::HResult(code::FWP_E_ALREADY_EXISTS)
        );
        assert!(SystemCode::from_dword(code::ERROR_MORE_DATA).is_win32(code::ERROR_MORE_DATA));
        assert!(SystemCode::from_dword(code::FWP_E_IN_USE).is_hresult(code::FWP_E_IN_USE));
    }

    #[test]
    fn classification() {
        use Kind::*;
        let w = SystemCode::Win32;
        let h = SystemCode::HResult;
        for step in [
            Step::EngineOpen,
            Step::Add,
            Step::OpenDevice,
            Step::DeviceControl,
            Step::Token,
        ] {
            assert_eq!(classify(step, w(code::ERROR_ACCESS_DENIED)), NotElevated);
            assert_eq!(
                classify(step, SystemCode::from_hresult(code::E_ACCESSDENIED)),
                NotElevated
            );
        }
        assert_eq!(
            classify(Step::EngineOpen, w(code::EPT_S_NOT_REGISTERED)),
            BfeNotRunning
        );
        assert_eq!(
            classify(Step::EngineOpen, w(code::RPC_S_SERVER_UNAVAILABLE)),
            BfeNotRunning
        );
        assert_eq!(
            classify(Step::Add, h(code::FWP_E_ALREADY_EXISTS)),
            AlreadyInstalled
        );
        // Already-exists outside of an add is not "already installed".
        assert_eq!(classify(Step::Delete, h(code::FWP_E_ALREADY_EXISTS)), Other);
        assert_eq!(
            classify(Step::OpenDevice, w(code::ERROR_FILE_NOT_FOUND)),
            DriverNotLoaded
        );
        assert_eq!(
            classify(Step::OpenDevice, w(code::ERROR_PATH_NOT_FOUND)),
            DriverNotLoaded
        );
        // File-not-found elsewhere is not about the driver.
        assert_eq!(
            classify(Step::ServiceControl, w(code::ERROR_FILE_NOT_FOUND)),
            Other
        );
        assert_eq!(
            classify(Step::DeviceControl, w(code::ERROR_REVISION_MISMATCH)),
            ProtocolMismatch
        );
        assert_eq!(
            classify(Step::DeviceControl, w(code::ERROR_INVALID_FUNCTION)),
            ProtocolMismatch
        );
        assert_eq!(
            classify(Step::DeviceControl, w(code::ERROR_INVALID_USER_BUFFER)),
            ProtocolMismatch
        );
        assert_eq!(classify(Step::Add, h(code::FWP_E_INVALID_FLAGS)), Other);
        assert_eq!(classify(Step::Add, w(12345)), Other);
    }

    #[test]
    fn not_found_codes() {
        for c in [
            code::FWP_E_CALLOUT_NOT_FOUND,
            code::FWP_E_FILTER_NOT_FOUND,
            code::FWP_E_PROVIDER_NOT_FOUND,
            code::FWP_E_SUBLAYER_NOT_FOUND,
            code::FWP_E_NOT_FOUND,
        ] {
            assert!(SystemCode::from_dword(c).is_not_found());
        }
        assert!(!SystemCode::from_dword(code::FWP_E_IN_USE).is_not_found());
        assert!(!SystemCode::Win32(code::ERROR_FILE_NOT_FOUND).is_not_found());
    }

    #[test]
    fn messages_carry_code_and_hint() {
        let e = Error::system(
            Step::Add,
            SystemCode::from_dword(code::FWP_E_ALREADY_EXISTS),
            "FwpmProviderAdd0 (wfpmon)",
        );
        assert_eq!(e.exit_code(), 6);
        let text = e.to_string();
        assert!(text.starts_with("FwpmProviderAdd0 (wfpmon) failed"));
        assert!(text.contains("uninstall"));
        assert!(
            text.contains("HRESULT 0x80320009 FWP_E_ALREADY_EXISTS"),
            "{text}"
        );

        let e = Error::system(Step::Query, SystemCode::Win32(31), "FwpmCalloutGetByKey0");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "FwpmCalloutGetByKey0 failed [Win32 error 31 (0x0000001F)]"
        );
    }
}
