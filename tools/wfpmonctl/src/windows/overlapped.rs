//! The control device over overlapped `DeviceIoControl`: wfpmonctl's
//! transport, public (`wfpmonctl::overlapped`) so that wfpmon-export uses
//! the same code.
//!
//! A request is sent with an `OVERLAPPED` and a manual-reset event, then
//! waited for in slices (`GetOverlappedResultEx`); what to do while it is
//! pending — cancel it (`CancelIoEx`) or wait on — is the caller's
//! [`Pending`] policy: wfpmonctl cancels on Ctrl+C and when the driver's
//! service is stopping; the exporter bounds each pending read and cancels
//! on its stop.

use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_IO_PENDING, ERROR_MORE_DATA, HANDLE, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResultEx, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::CreateEventW;

use super::{Owned, last_error, wide};
use crate::device::IoctlError;
use crate::error::SystemCode;

/// What the caller decides while a request is pending.
pub trait Pending {
    /// The request has just become pending: cancel it at once?
    fn pending(&mut self) -> bool;
    /// A wait slice passed with the request still pending: cancel it?
    fn waited(&mut self) -> bool;
}

/// Why [`Overlapped::open`] failed: the call and its Win32 error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// `CreateFileW` on the device path.
    CreateFile(u32),
    /// `CreateEventW` for the requests' event.
    CreateEvent(u32),
}

/// An open device and the event its requests signal.
pub struct Overlapped {
    handle: Owned,
    event: Owned,
}

/// The code of a failed open: `Owned::new` reports `GetLastError`, a Win32
/// code (the other kinds carry their bits unchanged).
#[allow(clippy::cast_sign_loss)]
const fn win32(code: SystemCode) -> u32 {
    match code {
        SystemCode::Win32(c) | SystemCode::NtStatus(c) => c,
        SystemCode::HResult(c) => c as u32,
    }
}

impl Overlapped {
    /// Opens `path` with `access` (`GENERIC_READ`, `GENERIC_WRITE`) for
    /// overlapped I/O, shared for reading and writing.
    ///
    /// # Errors
    /// The failing call and its Win32 error.
    pub fn open(path: &str, access: u32) -> Result<Self, OpenError> {
        let path = wide(path);
        // SAFETY: `path` is NUL-terminated and outlives the call; no
        // security attributes, no template.
        let handle = unsafe {
            CreateFileW(
                path.as_ptr(),
                access,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                std::ptr::null(),
                OPEN_EXISTING,
                FILE_FLAG_OVERLAPPED,
                std::ptr::null_mut(),
            )
        };
        // The last error is read before anything (an allocation) can change it.
        let handle =
            Owned::new(handle, CloseHandle).map_err(|c| OpenError::CreateFile(win32(c)))?;
        // SAFETY: no attributes, no name; manual reset, as overlapped I/O needs.
        let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        let event = Owned::new(event, CloseHandle).map_err(|c| OpenError::CreateEvent(win32(c)))?;
        Ok(Self { handle, event })
    }

    /// The device's handle (valid while `self` lives).
    #[must_use]
    pub const fn handle(&self) -> HANDLE {
        self.handle.0
    }

    /// Sends `code` with `input`; returns the bytes written to `output`.
    /// While the request is pending it is waited for in `slice`s, and
    /// cancelled whenever `policy` says so (it then completes with
    /// `ERROR_OPERATION_ABORTED`, which is returned).
    ///
    /// # Errors
    /// The Win32 error the request failed with.
    pub fn request(
        &mut self,
        code: u32,
        input: &[u8],
        output: &mut [u8],
        slice: Duration,
        policy: &mut impl Pending,
    ) -> Result<usize, IoctlError> {
        let too_big = |_| IoctlError(SystemCode::Win32(ERROR_MORE_DATA));
        let in_len = u32::try_from(input.len()).map_err(too_big)?;
        let out_len = u32::try_from(output.len()).map_err(too_big)?;
        let slice_ms = u32::try_from(slice.as_millis()).unwrap_or(u32::MAX);
        // No output (SET_COUNTING): a null buffer, not a dangling one.
        let out = if output.is_empty() {
            std::ptr::null_mut()
        } else {
            output.as_mut_ptr()
        };
        let handle = self.handle.0;
        let mut overlapped = OVERLAPPED {
            hEvent: self.event.0,
            ..OVERLAPPED::default()
        };
        // SAFETY: the handle is open (for overlapped I/O, so an OVERLAPPED
        // with a manual-reset event is passed, and the byte count comes from
        // GetOverlappedResultEx); the buffers and `overlapped` are valid for
        // the lengths passed and outlive the request, which this function
        // waits for below.
        let ok = unsafe {
            DeviceIoControl(
                handle,
                code,
                input.as_ptr().cast(),
                in_len,
                out.cast(),
                out_len,
                std::ptr::null_mut(),
                &raw mut overlapped,
            )
        };
        if ok == 0 {
            let error = last_error();
            if error != SystemCode::Win32(ERROR_IO_PENDING) {
                return Err(IoctlError(error));
            }
            if policy.pending() {
                // SAFETY: `overlapped` is the pending request's.
                unsafe { CancelIoEx(handle, &raw const overlapped) };
            }
        }
        let mut returned = 0u32;
        loop {
            // SAFETY: `overlapped` is the request's; the call returns TRUE,
            // or FALSE with WAIT_TIMEOUT while the request is still pending
            // (this loop then waits again), or FALSE once it is complete:
            // nothing refers to the buffers after the loop.
            let ok = unsafe {
                GetOverlappedResultEx(
                    handle,
                    &raw const overlapped,
                    &raw mut returned,
                    slice_ms,
                    0,
                )
            };
            if ok != 0 {
                return Ok((returned as usize).min(output.len()));
            }
            let error = last_error();
            if error != SystemCode::Win32(WAIT_TIMEOUT) {
                return Err(IoctlError(error));
            }
            if policy.waited() {
                // SAFETY: `overlapped` is the pending request's; it then
                // completes with ERROR_OPERATION_ABORTED, which the loop
                // returns.
                unsafe { CancelIoEx(handle, &raw const overlapped) };
            }
        }
    }
}
