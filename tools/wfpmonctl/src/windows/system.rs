//! Service states and token elevation.

use std::mem::{offset_of, size_of};

use ::windows::Win32::Foundation::HANDLE;
use ::windows::Win32::Security::{
    GetTokenInformation, TOKEN_ELEVATION, TOKEN_QUERY, TokenElevation,
};
use ::windows::Win32::System::Services::{
    OpenSCManagerW, OpenServiceW, QueryServiceStatusEx, SC_MANAGER_CONNECT, SC_STATUS_PROCESS_INFO,
    SERVICE_QUERY_STATUS, SERVICE_STATUS_PROCESS,
};
use ::windows::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
use ::windows::core::{Owned, PCWSTR};

use super::fwpm::wide;
use crate::engine::ServiceState;
use crate::exit::{Error, Step, SystemCode, code};

/// Service name of the Base Filtering Engine.
pub const BFE_SERVICE_NAME: &str = "BFE";

const STATUS_SIZE: usize = size_of::<SERVICE_STATUS_PROCESS>();
const STATE_OFFSET: usize = offset_of!(SERVICE_STATUS_PROCESS, dwCurrentState);
const _: () = assert!(STATE_OFFSET == 4 && STATUS_SIZE >= STATE_OFFSET + 4);

/// The status code of a `windows` crate error.
#[must_use]
pub const fn code_of(e: &::windows::core::Error) -> SystemCode {
    SystemCode::from_hresult(e.code().0.cast_unsigned())
}

/// The current state of service `name`.
///
/// # Errors
/// The classified failure of a service-control-manager call.
pub fn service_state(name: &str) -> Result<ServiceState, Error> {
    let fail = |e: &::windows::core::Error, what: &str| {
        Error::system(Step::ServiceControl, code_of(e), what)
    };
    // SAFETY: null machine and database names select the local, active
    // service database; SC_MANAGER_CONNECT is granted to every user.
    let scm = unsafe { OpenSCManagerW(PCWSTR::null(), PCWSTR::null(), SC_MANAGER_CONNECT) }
        .map_err(|e| fail(&e, "OpenSCManagerW"))?;
    // SAFETY: the handle was just opened by this process and is closed once.
    let scm = unsafe { Owned::new(scm) };
    let wname = wide(name);
    // SAFETY: `scm` is open and `wname` is NUL-terminated and outlives the call.
    let opened = unsafe { OpenServiceW(*scm, PCWSTR(wname.as_ptr()), SERVICE_QUERY_STATUS) };
    let service = match opened {
        Ok(h) => h,
        Err(e) if code_of(&e).is_win32(code::ERROR_SERVICE_DOES_NOT_EXIST) => {
            return Ok(ServiceState::NotInstalled);
        }
        Err(e) => return Err(fail(&e, &format!("OpenServiceW({name})"))),
    };
    // SAFETY: the handle was just opened by this process and is closed once.
    let service = unsafe { Owned::new(service) };
    // Read into bytes and decode the one field needed, rather than viewing
    // the structure as a byte slice.
    let mut buffer = [0u8; STATUS_SIZE];
    let mut needed = 0u32;
    // SAFETY: `service` is open; `buffer` is a writable SERVICE_STATUS_PROCESS-sized
    // buffer and `needed` a valid out-pointer, both outliving the call.
    unsafe {
        QueryServiceStatusEx(
            *service,
            SC_STATUS_PROCESS_INFO,
            Some(&mut buffer),
            &raw mut needed,
        )
    }
    .map_err(|e| fail(&e, &format!("QueryServiceStatusEx({name})")))?;
    let mut state = [0u8; 4];
    state.copy_from_slice(&buffer[STATE_OFFSET..STATE_OFFSET + 4]);
    Ok(ServiceState::from_raw(u32::from_ne_bytes(state)))
}

/// Whether the process token is elevated (`TokenElevation`).
///
/// # Errors
/// The classified failure of `OpenProcessToken` / `GetTokenInformation`.
pub fn is_elevated() -> Result<bool, Error> {
    let mut token = HANDLE::default();
    // SAFETY: returns the current process's pseudo-handle; no preconditions.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: `process` is the current process's pseudo-handle and `token`
    // a valid out-pointer.
    unsafe { OpenProcessToken(process, TOKEN_QUERY, &raw mut token) }
        .map_err(|e| Error::system(Step::Token, code_of(&e), "OpenProcessToken"))?;
    // SAFETY: OpenProcessToken succeeded: this process owns the handle.
    let token = unsafe { Owned::new(token) };
    let mut elevation = TOKEN_ELEVATION::default();
    let mut returned = 0u32;
    let size = u32::try_from(size_of::<TOKEN_ELEVATION>()).unwrap_or(u32::MAX);
    // SAFETY: the token is open with TOKEN_QUERY; `elevation` is a writable
    // TOKEN_ELEVATION of `size` bytes and `returned` a valid out-pointer.
    unsafe {
        GetTokenInformation(
            *token,
            TokenElevation,
            Some((&raw mut elevation).cast()),
            size,
            &raw mut returned,
        )
    }
    .map_err(|e| {
        Error::system(
            Step::Token,
            code_of(&e),
            "GetTokenInformation(TokenElevation)",
        )
    })?;
    Ok(elevation.TokenIsElevated != 0)
}
