//! I/O request packets of the control device.

use core::ptr::NonNull;

use wdk_sys::{IRP, IRP_MJ_DEVICE_CONTROL, NTSTATUS, ntddk};
use wfpmon_core::protocol::METHOD_BUFFERED;

/// The transfer-method bits of an I/O control code (`METHOD_FROM_CTL_CODE`).
const TRANSFER_METHOD_MASK: u32 = 3;

/// `IO_NO_INCREMENT`: no priority boost for the requester (its value, 0,
/// typed as the `CCHAR` `IofCompleteRequest` takes).
const IO_NO_INCREMENT_BOOST: i8 = 0;

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

    /// The raw IRP, handed over (to the cancel-safe queue): whoever holds
    /// it next completes it.
    pub const fn into_raw(self) -> NonNull<IRP> {
        self.raw
    }

    /// The file object of `irp`'s current stack location (the handle the
    /// request came on).
    ///
    /// # Safety
    /// `irp` must be a live IRP with a valid current stack location.
    pub unsafe fn file_object_of(irp: *const IRP) -> *const wdk_sys::FILE_OBJECT {
        // SAFETY: contract: a live IRP.
        let irp = unsafe { &*irp };
        // SAFETY: contract: with a valid current stack location.
        unsafe { current_stack(irp) }.FileObject
    }

    /// The little-endian `u64` at `offset` in the input of a queued
    /// `METHOD_BUFFERED` device-control request (its system buffer, which
    /// holds the input until the request is completed), if the input is
    /// that long.
    ///
    /// # Safety
    /// `irp` must be a live IRP of ours, not completed, with a valid current
    /// stack location (e.g. one held in our cancel-safe queue, under its
    /// lock).
    pub unsafe fn buffered_input_u64_of(irp: *const IRP, offset: usize) -> Option<u64> {
        // SAFETY: contract: a live IRP of ours with a valid current stack
        // location.
        let irp = unsafe { &*irp };
        // SAFETY: as above.
        let params = buffered_parameters(unsafe { current_stack(irp) })?;
        if params.input_len < offset + 8 {
            return None;
        }
        // SAFETY: METHOD_BUFFERED: the union holds SystemBuffer, at least
        // InputBufferLength bytes, ours until completion.
        let buffer = unsafe { irp.AssociatedIrp.SystemBuffer };
        if buffer.is_null() {
            return None;
        }
        let field = buffer.cast::<u8>().wrapping_add(offset).cast::<[u8; 8]>();
        // SAFETY: `offset + 8` bytes are inside the buffer (checked above);
        // a byte array needs no alignment.
        let bytes = unsafe { field.read() };
        Some(u64::from_le_bytes(bytes))
    }

    /// The file object the request came on.
    pub fn file_object(&self) -> *const wdk_sys::FILE_OBJECT {
        self.stack().FileObject
    }

    const fn irp(&self) -> &IRP {
        // SAFETY: a live IRP, ours until completed (from_raw's contract).
        unsafe { self.raw.as_ref() }
    }

    fn stack(&self) -> &wdk_sys::IO_STACK_LOCATION {
        // SAFETY: a dispatched IRP, ours, with a valid current stack
        // location (from_raw's contract).
        unsafe { current_stack(self.irp()) }
    }

    /// `IRP_MJ_*` of the request.
    pub fn major_function(&self) -> u32 {
        u32::from(self.stack().MajorFunction)
    }

    /// Whether an `IRP_MJ_CREATE` opens a name inside the device's namespace
    /// (`\Device\WfpMon\anything`: a non-empty `FileObject->FileName`)
    /// rather than the device itself.
    pub fn opens_a_name_below_the_device(&self) -> bool {
        // SAFETY: the stack location's FileObject is the file object being
        // opened (or null), valid while the IRP is ours.
        let Some(file) = (unsafe { self.stack().FileObject.as_ref() }) else {
            return false;
        };
        file.FileName.Length != 0
    }

    /// The parameters and the system buffer of an `IRP_MJ_DEVICE_CONTROL`
    /// request that uses `METHOD_BUFFERED`: one non-paged block of
    /// `max(input_len, output_len)` bytes holding the input on entry and the
    /// output on completion (empty when both lengths are zero).
    ///
    /// `None` for any other request or transfer method: their buffers are
    /// described elsewhere (an MDL, or the caller's own address space) and
    /// `SystemBuffer` is not `max(input, output)` bytes long, so it is never
    /// read for them.
    pub fn buffered_device_control(&mut self) -> Option<(DeviceControl, &mut [u8])> {
        let params = buffered_parameters(self.stack())?;
        let len = params.input_len.max(params.output_len);
        // SAFETY: for METHOD_BUFFERED the union holds SystemBuffer (checked
        // above): the I/O manager allocated max(input, output) bytes, ours
        // until completion.
        let ptr = unsafe { self.irp().AssociatedIrp.SystemBuffer };
        if len == 0 || ptr.is_null() {
            return Some((params, &mut []));
        }
        // SAFETY: see above: `len` valid bytes, exclusively ours.
        Some((params, unsafe {
            core::slice::from_raw_parts_mut(ptr.cast::<u8>(), len)
        }))
    }

    /// Completes the request with `status`, reporting `information` bytes
    /// of output.
    pub fn complete(self, status: NTSTATUS, information: usize) -> NTSTATUS {
        let mut raw = self.raw;
        // SAFETY: our IRP, not yet completed; exclusive access.
        let irp = unsafe { raw.as_mut() };
        irp.IoStatus.__bindgen_anon_1.Status = status;
        irp.IoStatus.Information = information as u64;
        // SAFETY: completing our IRP exactly once (this consumes `self`);
        // callable at IRQL <= DISPATCH_LEVEL. The IRP is not touched after.
        unsafe { ntddk::IofCompleteRequest(irp, IO_NO_INCREMENT_BOOST) };
        status
    }
}

/// The current stack location of `irp` (what wdm.h's inline
/// `IoGetCurrentIrpStackLocation` reads).
///
/// # Safety
/// `irp` must be an IRP a driver of ours is processing (dispatched, or held
/// in our queue), with a valid current stack location.
unsafe fn current_stack(irp: &IRP) -> &wdk_sys::IO_STACK_LOCATION {
    // SAFETY: while a driver processes the IRP, `Tail` holds `Overlay`.
    let overlay = unsafe { &irp.Tail.Overlay };
    // SAFETY: ... and this union member holds `CurrentStackLocation`.
    let location = unsafe {
        overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    };
    // SAFETY: valid current stack location (contract).
    unsafe { &*location }
}

/// The parameters of an `IRP_MJ_DEVICE_CONTROL` request that uses
/// `METHOD_BUFFERED`; `None` for any other request or transfer method.
fn buffered_parameters(stack: &wdk_sys::IO_STACK_LOCATION) -> Option<DeviceControl> {
    if u32::from(stack.MajorFunction) != IRP_MJ_DEVICE_CONTROL {
        return None;
    }
    // SAFETY: reading the DeviceIoControl member of the parameters union of
    // an IRP_MJ_DEVICE_CONTROL request (checked above).
    let p = unsafe { stack.Parameters.DeviceIoControl };
    (p.IoControlCode & TRANSFER_METHOD_MASK == METHOD_BUFFERED).then_some(DeviceControl {
        code: p.IoControlCode,
        input_len: p.InputBufferLength as usize,
        output_len: p.OutputBufferLength as usize,
    })
}
