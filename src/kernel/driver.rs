//! The driver object.

use core::ptr::NonNull;

use wdk_sys::{DRIVER_OBJECT, PDRIVER_DISPATCH, PDRIVER_UNLOAD};

/// The driver object the I/O manager gave `DriverEntry`.
pub struct DriverObject {
    raw: NonNull<DRIVER_OBJECT>,
}

impl DriverObject {
    /// Wraps the driver object.
    ///
    /// # Safety
    /// `raw` must be the driver object passed to `DriverEntry`, used only
    /// during `DriverEntry` (`PASSIVE_LEVEL`, no concurrent access).
    pub unsafe fn from_raw(raw: *mut DRIVER_OBJECT) -> Option<Self> {
        NonNull::new(raw).map(|raw| Self { raw })
    }

    /// The raw pointer, for kernel calls that take it.
    pub const fn as_raw(&self) -> *mut DRIVER_OBJECT {
        self.raw.as_ptr()
    }

    const fn get(&mut self) -> &mut DRIVER_OBJECT {
        // SAFETY: valid and exclusively ours during DriverEntry (from_raw).
        unsafe { self.raw.as_mut() }
    }

    /// Sets the unload routine (last step of `DriverEntry`).
    pub fn set_unload(&mut self, unload: PDRIVER_UNLOAD) {
        self.get().DriverUnload = unload;
    }

    /// Sets the dispatch routine of every IRP major function: `handler` for
    /// the listed ones, `fallback` for all others.
    pub fn set_dispatch(
        &mut self,
        handled: &[u32],
        dispatch: PDRIVER_DISPATCH,
        otherwise: PDRIVER_DISPATCH,
    ) {
        for (major, slot) in self.get().MajorFunction.iter_mut().enumerate() {
            let is_handled = handled.iter().any(|&m| m as usize == major);
            *slot = if is_handled { dispatch } else { otherwise };
        }
    }
}
