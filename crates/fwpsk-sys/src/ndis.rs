//! Read-only prefix views of the NDIS `NET_BUFFER_LIST` and `NET_BUFFER`
//! structures (`ndis/nbl.h`), enough to walk the lists and count bytes.
//!
//! Sources: the reference pages `NET_BUFFER_LIST`, `NET_BUFFER_LIST_HEADER`,
//! `NET_BUFFER_LIST_DATA`, `NET_BUFFER`, `NET_BUFFER_HEADER` and
//! `NET_BUFFER_DATA` (ndis/nbl.h), and the accessor macros
//! `NET_BUFFER_LIST_NEXT_NBL`, `NET_BUFFER_LIST_FIRST_NB`,
//! `NET_BUFFER_NEXT_NB`, `NET_BUFFER_CURRENT_MDL`,
//! `NET_BUFFER_CURRENT_MDL_OFFSET` and `NET_BUFFER_DATA_LENGTH`.
//!
//! Both structures begin with a union of their header data
//! (`NET_BUFFER_LIST_DATA` / `NET_BUFFER_DATA`) and an `SLIST_HEADER`. The
//! views declare only that header data; the rest of each structure (and
//! its 16-byte alignment, which comes from `SLIST_HEADER`) is not declared.
//! So:
//!
//! * use the views only through pointers that NDIS or WFP handed out
//!   (`layerData`, `netBufferListChain`, ...), never by value, and never
//!   allocate one;
//! * treat them as read-only: NDIS and the filter engine own the lists.
//!
//! `MDL` pointers are opaque (`*mut c_void`); mapping an MDL needs the
//! kernel's `MmGetSystemAddressForMdlSafe`, which is not declared here.

use core::ffi::c_void;

use crate::types::{SIZE_T, ULONG};

/// Prefix view of `NET_BUFFER_LIST` (ndis/nbl.h): its
/// `NET_BUFFER_LIST_HEADER` / `NET_BUFFER_LIST_DATA` members.
#[repr(C)]
#[derive(Debug)]
pub struct NET_BUFFER_LIST_HEADER_VIEW {
    /// `Next` (`NET_BUFFER_LIST_NEXT_NBL`): the next list in the chain, or
    /// null.
    pub Next: *mut Self,
    /// `FirstNetBuffer` (`NET_BUFFER_LIST_FIRST_NB`): the first buffer.
    pub FirstNetBuffer: *mut NET_BUFFER_HEADER_VIEW,
}

// Next @0, FirstNetBuffer @8 (= NET_BUFFER_LIST_DATA, 16 bytes; the union
// with SLIST_HEADER Link, also 16 bytes on x64, keeps that size).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<NET_BUFFER_LIST_HEADER_VIEW>() == 16);
    assert!(align_of::<NET_BUFFER_LIST_HEADER_VIEW>() == 8);
    assert!(offset_of!(NET_BUFFER_LIST_HEADER_VIEW, Next) == 0);
    assert!(offset_of!(NET_BUFFER_LIST_HEADER_VIEW, FirstNetBuffer) == 8);
};

/// The `DataLength` / `stDataLength` union of `NET_BUFFER`
/// (`NET_BUFFER_DATA_LENGTH`, ndis/nbl.h). `SIZE_T`-sized; the `ULONG`
/// member aliases its low 32 bits (little-endian).
#[repr(C)]
#[derive(Clone, Copy)]
pub union NET_BUFFER_DATA_LENGTH {
    /// `DataLength`: used bytes of the MDL chain (at most `0xFFFFFFFF`).
    pub DataLength: ULONG,
    /// `stDataLength`: the same length as a `SIZE_T`.
    pub stDataLength: SIZE_T,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<NET_BUFFER_DATA_LENGTH>() == 8);
    assert!(align_of::<NET_BUFFER_DATA_LENGTH>() == 8);
};

/// Prefix view of `NET_BUFFER` (ndis/nbl.h): its `NET_BUFFER_HEADER` /
/// `NET_BUFFER_DATA` members.
#[repr(C)]
pub struct NET_BUFFER_HEADER_VIEW {
    /// `Next` (`NET_BUFFER_NEXT_NB`): the next buffer of the list, or null.
    pub Next: *mut Self,
    /// `CurrentMdl` (`NET_BUFFER_CURRENT_MDL`): `MDL*`, opaque.
    pub CurrentMdl: *mut c_void,
    /// `CurrentMdlOffset` (`NET_BUFFER_CURRENT_MDL_OFFSET`): offset of the
    /// used data in `CurrentMdl`.
    pub CurrentMdlOffset: ULONG,
    /// `DataLength` / `stDataLength` (`NET_BUFFER_DATA_LENGTH`); read it
    /// with [`NET_BUFFER_HEADER_VIEW::data_length`].
    pub DataLength: NET_BUFFER_DATA_LENGTH,
    /// `MdlChain` (`NET_BUFFER_FIRST_MDL`): `MDL*`, opaque.
    pub MdlChain: *mut c_void,
    /// `DataOffset` (`NET_BUFFER_DATA_OFFSET`): unused bytes before the data.
    pub DataOffset: ULONG,
}

// Next @0, CurrentMdl @8, CurrentMdlOffset @16 + 4 padding, the SIZE_T
// union @24 (0x18), MdlChain @32, DataOffset @40 + 4 tail padding => 48.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<NET_BUFFER_HEADER_VIEW>() == 48);
    assert!(align_of::<NET_BUFFER_HEADER_VIEW>() == 8);
    assert!(offset_of!(NET_BUFFER_HEADER_VIEW, Next) == 0);
    assert!(offset_of!(NET_BUFFER_HEADER_VIEW, CurrentMdl) == 8);
    assert!(offset_of!(NET_BUFFER_HEADER_VIEW, CurrentMdlOffset) == 0x10);
    assert!(offset_of!(NET_BUFFER_HEADER_VIEW, DataLength) == 0x18);
    assert!(offset_of!(NET_BUFFER_HEADER_VIEW, MdlChain) == 0x20);
    assert!(offset_of!(NET_BUFFER_HEADER_VIEW, DataOffset) == 0x28);
};

impl NET_BUFFER_HEADER_VIEW {
    /// `NET_BUFFER_DATA_LENGTH(nb)`: the used bytes of this buffer.
    #[must_use]
    pub const fn data_length(&self) -> ULONG {
        // SAFETY: both union members start at offset 0 and are at least 4
        // bytes long, so whichever member was written, the 4 bytes of
        // `DataLength` are initialised; every bit pattern is a valid `u32`.
        unsafe { self.DataLength.DataLength }
    }
}

/// Sum of `NET_BUFFER_DATA_LENGTH` over the buffers of one
/// `NET_BUFFER_LIST` (its `Next` list is not followed). Returns 0 for null.
///
/// # Safety
///
/// `nbl` must be null or point to a live `NET_BUFFER_LIST` whose buffer list
/// is null-terminated and not modified during the call (true for
/// `layerData` during `classifyFn`). Callable at any IRQL: it only reads
/// non-paged NDIS memory.
#[must_use]
pub unsafe fn net_buffer_list_data_length(nbl: *const NET_BUFFER_LIST_HEADER_VIEW) -> u64 {
    if nbl.is_null() {
        return 0;
    }
    // SAFETY: `nbl` is non-null and, per the caller, a live list.
    let mut nb = unsafe { (*nbl).FirstNetBuffer }.cast_const();
    let mut total: u64 = 0;
    while !nb.is_null() {
        // SAFETY: every non-null `Next` of a live list is a live buffer.
        let buffer = unsafe { &*nb };
        total = total.saturating_add(u64::from(buffer.data_length()));
        nb = buffer.Next.cast_const();
    }
    total
}

/// Sum of [`net_buffer_list_data_length`] over a chain of
/// `NET_BUFFER_LIST`s linked by `Next` (e.g. `netBufferListChain` of
/// [`crate::FWPS_STREAM_DATA0`]). Returns 0 for null.
///
/// # Safety
///
/// Every list of the chain must satisfy the contract of
/// [`net_buffer_list_data_length`], and the chain must be null-terminated.
#[must_use]
pub unsafe fn net_buffer_list_chain_data_length(first: *const NET_BUFFER_LIST_HEADER_VIEW) -> u64 {
    let mut nbl = first;
    let mut total: u64 = 0;
    while !nbl.is_null() {
        // SAFETY: `nbl` is a live list of the chain, per the caller.
        total = total.saturating_add(unsafe { net_buffer_list_data_length(nbl) });
        // SAFETY: as above; reading its `Next` link.
        nbl = unsafe { (*nbl).Next }.cast_const();
    }
    total
}
