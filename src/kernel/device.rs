//! The control device object `\Device\WfpMon`.

use core::ptr::{self, NonNull};

use wdk_sys::{
    DEVICE_OBJECT, FILE_DEVICE_SECURE_OPEN, HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE, UNICODE_STRING,
    WRITE_DAC, ntddk,
};
use wfpmon_core::{catalog, protocol, security};

use super::driver::DriverObject;
use super::{KERNEL_MODE, Status, WideStr, log, nt_success};
use crate::trace;

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
    /// `IoCreateDevice` for `\Device\WfpMon` (`FILE_DEVICE_WFPMON`, a vendor device type,
    /// `FILE_DEVICE_SECURE_OPEN`, non-exclusive), then its security
    /// descriptor: SYSTEM and Administrators only. `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The failing call's name and status; nothing is left behind.
    pub fn create(driver: &DriverObject) -> Result<Self, (&'static str, NTSTATUS)> {
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
                protocol::FILE_DEVICE_WFPMON,
                FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut raw,
            )
        };
        trace::step("IoCreateDevice", status);
        log!(
            "IoCreateDevice({}) -> {}",
            catalog::DEVICE_NAME,
            Status(status)
        );
        if !nt_success(status) {
            return Err(("IoCreateDevice", status));
        }
        let device = Self {
            raw: NonNull::new(raw).ok_or(("IoCreateDevice", wdk_sys::STATUS_UNSUCCESSFUL))?,
        };
        device.restrict_access()?;
        Ok(device)
    }

    /// Applies [`security::device_security_descriptor`] to the device
    /// object — the second half of what `IoCreateDeviceSecure` does — with
    /// documented ntoskrnl routines (ntifs.h): `ObOpenObjectByPointer` for a
    /// kernel handle with `WRITE_DAC`, `ZwSetSecurityObject` with the DACL,
    /// `ZwClose`. Every status is checked; any failure fails the step (and
    /// `create` then deletes the device).
    ///
    /// Why not `IoCreateDeviceSecure`: it lives in the static library
    /// wdmsec.lib, which wdk-sys does not bind and which has no counterpart
    /// in the Linux WDK substitute, so a hand declaration would only link on
    /// Windows. `ObSetSecurityObjectByPointer`, an export the WDK headers do
    /// not declare, is no option either: it does not compile against the
    /// real WDK.
    fn restrict_access(&self) -> Result<(), (&'static str, NTSTATUS)> {
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL (DriverEntry); a valid device object; no
        // access state; a NULL object type is allowed for KernelMode
        // (ObOpenObjectByPointer reference); OBJ_KERNEL_HANDLE because
        // DriverEntry may run outside the system process; `handle` receives
        // the handle.
        let status = unsafe {
            ntddk::ObOpenObjectByPointer(
                self.raw.as_ptr().cast(),
                OBJ_KERNEL_HANDLE,
                ptr::null_mut(),
                WRITE_DAC,
                ptr::null_mut(),
                KERNEL_MODE,
                &raw mut handle,
            )
        };
        trace::step("ObOpenObjectByPointer", status);
        log!("ObOpenObjectByPointer(WRITE_DAC) -> {}", Status(status));
        if !nt_success(status) {
            return Err(("ObOpenObjectByPointer", status));
        }
        let sd = security::device_security_descriptor();
        // SAFETY: a kernel handle we own, opened with WRITE_DAC; the
        // descriptor is a well-formed self-relative descriptor (host-tested)
        // that the object manager copies before returning; PASSIVE_LEVEL.
        let set = unsafe {
            ntddk::ZwSetSecurityObject(
                handle,
                security::DACL_SECURITY_INFORMATION,
                ptr::from_ref(&sd.0).cast_mut().cast(),
            )
        };
        trace::step("ZwSetSecurityObject", set);
        log!(
            "ZwSetSecurityObject(D:P(A;;FA;;;SY)(A;;FA;;;BA)) -> {}",
            Status(set)
        );
        // SAFETY: the handle opened above, closed exactly once.
        let closed = unsafe { ntddk::ZwClose(handle) };
        trace::step("ZwClose", closed);
        log!("ZwClose -> {}", Status(closed));
        if !nt_success(set) {
            Err(("ZwSetSecurityObject", set))
        } else if !nt_success(closed) {
            Err(("ZwClose", closed))
        } else {
            Ok(())
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
        // IoDeleteDevice returns nothing; reported as STATUS_SUCCESS.
        trace::teardown_step("IoDeleteDevice", 0);
        log!("IoDeleteDevice");
    }
}
