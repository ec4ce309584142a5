//! The control device `\\.\GLOBALROOT\Device\WfpMon`, implementing
//! [`ControlDevice`] with synchronous `DeviceIoControl` calls.

use ::windows::Win32::Foundation::{GENERIC_READ, GENERIC_WRITE, HANDLE};
use ::windows::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use ::windows::Win32::System::IO::DeviceIoControl;
use ::windows::core::{Owned, PCWSTR};
use wfpmon_core::catalog;

use super::fwpm::wide;
use super::system::code_of;
use crate::device::{ControlDevice, IoctlError};
use crate::exit::{Error, Step, SystemCode, code};

/// An open handle to the control device; closed on drop.
#[derive(Debug)]
pub struct Device {
    handle: Owned<HANDLE>,
}

impl Device {
    /// Opens the device for reading, and for writing too when `write` (the
    /// `SET_COUNTING` request requires `FILE_WRITE_ACCESS`).
    ///
    /// # Errors
    /// [`crate::exit::Kind::DriverNotLoaded`] when the device does not exist,
    /// [`crate::exit::Kind::NotElevated`] when access is denied.
    pub fn open(write: bool) -> Result<Self, Error> {
        let path = wide(catalog::DEVICE_USER_PATH);
        let access = if write {
            GENERIC_READ.0 | GENERIC_WRITE.0
        } else {
            GENERIC_READ.0
        };
        // SAFETY: `path` is NUL-terminated and outlives the call; no
        // security attributes and no template file.
        let opened = unsafe {
            CreateFileW(
                PCWSTR(path.as_ptr()),
                access,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                None,
                OPEN_EXISTING,
                FILE_ATTRIBUTE_NORMAL,
                None,
            )
        };
        let handle = opened.map_err(|e| {
            Error::system(
                Step::OpenDevice,
                code_of(&e),
                &format!("CreateFileW({})", catalog::DEVICE_USER_PATH),
            )
        })?;
        // SAFETY: CreateFileW succeeded, so this process owns the handle and
        // nothing else closes it.
        let handle = unsafe { Owned::new(handle) };
        Ok(Self { handle })
    }
}

fn len_u32(len: usize) -> Result<u32, IoctlError> {
    u32::try_from(len)
        .map_err(|_| IoctlError::Failed(SystemCode::Win32(code::ERROR_INSUFFICIENT_BUFFER)))
}

impl ControlDevice for Device {
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        let in_len = len_u32(input.len())?;
        let out_len = len_u32(output.len())?;
        let in_ptr = (!input.is_empty()).then(|| input.as_ptr().cast());
        let out_ptr = (!output.is_empty()).then(|| output.as_mut_ptr().cast());
        let mut returned = 0u32;
        // SAFETY: the handle is open; the buffers are valid for the lengths
        // passed and outlive the call, which is synchronous (no OVERLAPPED:
        // the device was not opened for overlapped I/O), so `returned` is
        // written before it returns.
        let outcome = unsafe {
            DeviceIoControl(
                *self.handle,
                code,
                in_ptr,
                in_len,
                out_ptr,
                out_len,
                Some(&raw mut returned),
                None,
            )
        };
        let bytes = (returned as usize).min(output.len());
        match outcome {
            Ok(()) => Ok(bytes),
            Err(e) => {
                let status = code_of(&e);
                // STATUS_BUFFER_OVERFLOW is a warning: the I/O manager copied
                // `returned` bytes of (partial) output, and Win32 reports it as
                // FALSE + ERROR_MORE_DATA.
                if status.is_win32(code::ERROR_MORE_DATA) {
                    Err(IoctlError::MoreData(bytes))
                } else {
                    Err(IoctlError::Failed(status))
                }
            }
        }
    }
}
