//! I/O request packets of the control device.

use core::ptr::NonNull;

use wdk_sys::{IO_NO_INCREMENT, IRP, NTSTATUS, ntddk};

/// An IRP sent to the control device; must be completed exactly once
/// ([`Irp::complete`] consumes it).
pub struct Irp {
    raw: NonNull<IRP>,
}

/// Parameters of `IRP_MJ_DEVICE_CONTROL`.
#[derive(Clone, Copy, Debug)]
pub struct DeviceControl {
    /// The I/O control code.
    pub code: u32,
    /// Bytes of input in the system buffer.
    pub input_len: usize,
    /// Bytes of output the caller accepts.
    pub output_len: usize,
}

impl Irp {
    /// Wraps the IRP a dispatch routine received.
    ///
    /// # Safety
    /// `raw` must be the IRP passed to a dispatch routine of ours, not yet
    /// completed, with a valid current stack location.
    pub unsafe fn from_raw(raw: *mut IRP) -> Option<Self> {
        NonNull::new(raw).map(|raw| Self { raw })
    }

    fn stack(&self) -> &wdk_sys::IO_STACK_LOCATION {
        // SAFETY: a dispatched IRP has a current stack location
        // (`IoGetCurrentIrpStackLocation`, an inline function in wdm.h that
        // reads exactly this field).
        unsafe {
            &*self.raw.as_ref().Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation
        }
    }

    /// `IRP_MJ_*` of the request.
    pub fn major_function(&self) -> u32 {
        u32::from(self.stack().MajorFunction)
    }

    /// The device-control parameters (only meaningful for
    /// `IRP_MJ_DEVICE_CONTROL`).
    pub fn device_control(&self) -> DeviceControl {
        // SAFETY: reading the DeviceIoControl member of the parameters
        // union; the caller only uses it for IRP_MJ_DEVICE_CONTROL.
        let p = unsafe { self.stack().Parameters.DeviceIoControl };
        DeviceControl {
            code: p.IoControlCode,
            input_len: p.InputBufferLength as usize,
            output_len: p.OutputBufferLength as usize,
        }
    }

    /// The `METHOD_BUFFERED` system buffer: one non-paged block of
    /// `max(input_len, output_len)` bytes holding the input on entry and
    /// the output on completion. `None` when both lengths are zero.
    pub fn system_buffer(&mut self, params: DeviceControl) -> Option<&mut [u8]> {
        let len = params.input_len.max(params.output_len);
        // SAFETY: for METHOD_BUFFERED the I/O manager allocated SystemBuffer
        // with max(input, output) bytes, ours until completion.
        let ptr = unsafe { self.raw.as_ref().AssociatedIrp.SystemBuffer };
        if len == 0 || ptr.is_null() {
            return None;
        }
        // SAFETY: see above: `len` valid bytes, exclusively ours.
        Some(unsafe { core::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
    }

    /// Completes the request with `status`, reporting `information` bytes
    /// of output.
    pub fn complete(self, status: NTSTATUS, information: usize) -> NTSTATUS {
        let irp = self.raw.as_ptr();
        // SAFETY: completing our IRP once; IofCompleteRequest may be called
        // at IRQL <= DISPATCH_LEVEL. The IRP is not touched afterwards.
        unsafe {
            (*irp).IoStatus.__bindgen_anon_1.Status = status;
            (*irp).IoStatus.Information = information as _;
            ntddk::IofCompleteRequest(irp, IO_NO_INCREMENT as _);
        }
        status
    }
}
