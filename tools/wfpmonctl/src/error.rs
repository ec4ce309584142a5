//! Failures, their exit codes, and the Windows status codes behind them.

use std::fmt::{self, Write as _};

use windows_sys::Win32::Foundation::{
    E_ACCESSDENIED, ERROR_ACCESS_DENIED, ERROR_ARITHMETIC_OVERFLOW, ERROR_FILE_NOT_FOUND,
    ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_FUNCTION, ERROR_INVALID_PARAMETER,
    ERROR_INVALID_USER_BUFFER, ERROR_NO_SUCH_DEVICE, ERROR_PATH_NOT_FOUND, ERROR_REVISION_MISMATCH,
    FWP_E_ALREADY_EXISTS,
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
    DriverNotLoaded = 5,
    AlreadyInstalled = 6,
    ProtocolMismatch = 7,
    Inactive = 8,
    NotATerminal = 9,
}

/// Every exit code and its meaning, as `--help` lists them.
pub const EXIT_CODES: [(Kind, &str); 9] = [
    (Kind::Other, "any other failure (Windows code printed)"),
    (Kind::Usage, "usage error"),
    (Kind::NotElevated, "not elevated / access denied"),
    (Kind::BfeNotRunning, "Base Filtering Engine not running"),
    (Kind::DriverNotLoaded, "wfpmon driver not loaded"),
    (Kind::AlreadyInstalled, "objects already installed"),
    (Kind::ProtocolMismatch, "control-protocol mismatch"),
    (Kind::Inactive, "status --check: not fully active"),
    (Kind::NotATerminal, "top: standard output is not a terminal"),
];

/// The "Exit codes:" section of `--help`.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:\n  0  success\n");
    for (kind, meaning) in EXIT_CODES {
        let _ = writeln!(text, "  {}  {meaning}", kind as u8);
    }
    text
}

/// A status code returned by a Windows API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SystemCode {
    Win32(u32),
    /// An HRESULT that is not a wrapped Win32 code (e.g. `FWP_E_*`).
    HResult(i32),
}

impl SystemCode {
    /// Classifies the `DWORD` an `Fwpm*` function returned: an HRESULT when
    /// its top bit is set (unwrapping `HRESULT_FROM_WIN32`), else Win32.
    pub const fn from_dword(value: u32) -> Self {
        if value & 0xFFFF_0000 == 0x8007_0000 {
            Self::Win32(value & 0xFFFF)
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
        ) => Kind::DriverNotLoaded,
        // The driver refused a request encoded with the shared protocol
        // definitions: its idea of the protocol differs.
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

/// A failure ready to be reported: kind (hence exit code), a message that
/// says what to do, and the Windows code behind it when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub system: Option<SystemCode>,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            system: None,
        }
    }

    /// `what` failed with `code` during `step`; the message gains the
    /// remedy of the kind [`classify`] gives.
    pub fn system(step: Step, code: SystemCode, what: &str) -> Self {
        let kind = classify(step, code);
        let remedy = match kind {
            Kind::NotElevated => ": run wfpmonctl from an elevated prompt",
            Kind::BfeNotRunning => ": the Base Filtering Engine is not running (sc.exe start bfe)",
            Kind::DriverNotLoaded => ": the wfpmon driver is not loaded (`sc.exe start wfpmon`)",
            Kind::AlreadyInstalled => ": wfpmon's objects are already there (wfpmonctl uninstall)",
            Kind::ProtocolMismatch => ": driver and wfpmonctl come from different builds",
            Kind::Other | Kind::Usage | Kind::Inactive | Kind::NotATerminal => "",
        };
        let message = format!("{what} failed{remedy}");
        Self {
            kind,
            message,
            system: Some(code),
        }
    }

    pub const fn exit_code(&self) -> u8 {
        self.kind as u8
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        self.system.map_or(Ok(()), |code| write!(f, " [{code}]"))
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
                help.contains(&format!("\n  {}  {meaning}\n", kind as u8)),
                "{help}"
            );
        }
    }

    #[test]
    fn dword_forms() {
        assert_eq!(SystemCode::from_dword(5), SystemCode::Win32(5));
        assert_eq!(SystemCode::from_dword(0x8007_0005), SystemCode::Win32(5));
        assert_eq!(
            SystemCode::from_dword(FWP_E_ALREADY_EXISTS.cast_unsigned()),
            SystemCode::HResult(FWP_E_ALREADY_EXISTS)
        );
        assert!(SystemCode::from_dword(FWP_E_FILTER_NOT_FOUND.cast_unsigned()).is_not_found());
        assert!(!SystemCode::from_dword(FWP_E_IN_USE.cast_unsigned()).is_not_found());
        assert!(!SystemCode::Win32(ERROR_FILE_NOT_FOUND).is_not_found());
        assert_eq!(
            SystemCode::HResult(FWP_E_ALREADY_EXISTS).to_string(),
            "HRESULT 0x80320009"
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
        assert_eq!(classify(Step::OpenDevice, w(2)), Kind::DriverNotLoaded);
        assert_eq!(classify(Step::ServiceControl, w(2)), Kind::Other);
        assert_eq!(
            classify(Step::DeviceControl, w(1306)),
            Kind::ProtocolMismatch
        );
        assert_eq!(
            classify(Step::DeviceControl, w(1784)),
            Kind::ProtocolMismatch
        );
    }

    #[test]
    fn messages_carry_code_and_remedy() {
        let e = Error::system(
            Step::Add,
            SystemCode::HResult(FWP_E_ALREADY_EXISTS),
            "FwpmProviderAdd0",
        );
        assert_eq!(e.exit_code(), 6);
        let text = e.to_string();
        assert!(
            text.starts_with("FwpmProviderAdd0 failed: wfpmon's objects are already there"),
            "{text}"
        );
        assert!(
            text.contains("uninstall") && text.ends_with("[HRESULT 0x80320009]"),
            "{text}"
        );
        let e = Error::system(Step::Engine, SystemCode::Win32(31), "FwpmCalloutGetByKey0");
        assert_eq!(
            e.to_string(),
            "FwpmCalloutGetByKey0 failed [Win32 error 31 (0x0000001F)]"
        );
    }
}
