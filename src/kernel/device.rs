//! The control device object `\Device\WfpMon`.

use core::ptr::{self, NonNull};

use wdk_sys::{DEVICE_OBJECT, FILE_DEVICE_SECURE_OPEN, NTSTATUS, UNICODE_STRING, ntddk};
use wfpmon_core::{catalog, protocol, security};

use super::driver::DriverObject;
use super::{Status, WideStr, log, nt_success};

const NAME_LEN: usize = catalog::DEVICE_NAME.len();
/// The name and its terminating NUL (`IoCreateDevice` documents a
/// null-terminated string; `Length` excludes the NUL, `MaximumLength` not).
static DEVICE_NAME: WideStr<{ NAME_LEN + 1 }> = WideStr::with_nul(catalog::DEVICE_NAME);

/// The device object; deleted (`IoDeleteDevice`) when dropped.
///
/// It must outlive every callout registered against it: the lifecycle
/// drops it only after the callouts are unregistered.
pub struct Device {
    raw: NonNull<DEVICE_OBJECT>,
}

impl Device {
    /// `IoCreateDevice` for `\Device\WfpMon` (`FILE_DEVICE_NETWORK`,
    /// `FILE_DEVICE_SECURE_OPEN`, non-exclusive), then its security
    /// descriptor: SYSTEM and Administrators only. `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The failing call's status; nothing is left behind.
    pub fn create(driver: &DriverObject) -> Result<Self, NTSTATUS> {
        #[allow(clippy::cast_possible_truncation)] // a short constant name
        let byte_len = (NAME_LEN * 2) as u16;
        let mut name = UNICODE_STRING {
            Length: byte_len,
            MaximumLength: byte_len + 2,
            Buffer: DEVICE_NAME.as_slice().as_ptr().cast_mut(),
        };
        let mut raw: *mut DEVICE_OBJECT = ptr::null_mut();
        // SAFETY: DriverEntry context (PASSIVE_LEVEL); `name` points at a
        // static UTF-16 buffer the call only reads; `raw` receives the device.
        let status = unsafe {
            ntddk::IoCreateDevice(
                driver.as_raw(),
                0,
                &raw mut name,
                protocol::FILE_DEVICE_NETWORK,
                FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut raw,
            )
        };
        log!(
            "IoCreateDevice({}) -> {}",
            catalog::DEVICE_NAME,
            Status(status)
        );
        if !nt_success(status) {
            return Err(status);
        }
        let device = Self {
            raw: NonNull::new(raw).ok_or(wdk_sys::STATUS_UNSUCCESSFUL)?,
        };
        device.restrict_access()?;
        Ok(device)
    }

    /// Applies [`security::device_security_descriptor`] to the device
    /// object — the second half of what `IoCreateDeviceSecure` does.
    fn restrict_access(&self) -> Result<(), NTSTATUS> {
        let sd = security::device_security_descriptor();
        // SAFETY: the device object is valid; the descriptor is a
        // well-formed self-relative descriptor (host-tested) that the object
        // manager copies before returning; PASSIVE_LEVEL.
        let status = unsafe {
            ntddk::ObSetSecurityObjectByPointer(
                self.raw.as_ptr().cast(),
                security::DACL_SECURITY_INFORMATION,
                ptr::from_ref(&sd.0).cast_mut().cast(),
            )
        };
        log!(
            "ObSetSecurityObjectByPointer(D:P(A;;FA;;;SY)(A;;FA;;;BA)) -> {}",
            Status(status)
        );
        if nt_success(status) {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// The raw device object, for `FwpsCalloutRegister1`.
    pub const fn as_raw(&self) -> *mut DEVICE_OBJECT {
        self.raw.as_ptr()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: we created the device and delete it exactly once, after
        // every callout registered against it is gone (lifecycle order).
        unsafe { ntddk::IoDeleteDevice(self.raw.as_ptr()) };
        log!("IoDeleteDevice");
    }
}
