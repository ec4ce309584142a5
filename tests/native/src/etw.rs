//! ETW models: `EtwRegister`, `EtwUnregister`, `EtwSetInformation`,
//! `EtwWriteTransfer` (and `EtwWrite`), with a session that can enable the
//! provider.
//!
//! The rules are in `docs/engine-rules.md`: registration and enabling (T1),
//! calls only through a registered handle (T2), unregistered before the
//! image goes (T3, checked by [`crate::world`]), well-formed TraceLogging
//! events (T4). When a session is running
//! ([`crate::kernel::Kernel::etw_session`]), `EtwRegister` calls the enable
//! callback inside the call, as ETW does, so the driver's events are really
//! written; each decoded event goes to the log.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::kernel::{HIGH_LEVEL, PASSIVE_LEVEL, call_into_image, enter_api, irql, lock, status};

/// A registered provider.
pub struct Registration {
    /// ETW keeps the provider id's value: a copy with a stable address
    /// (handed to the enable callback).
    _guid: Box<[u8; 16]>,
}

/// `PETWENABLECALLBACK`.
type EnableCallback = unsafe extern "win64" fn(*const u8, u32, u8, u64, u64, *const u8, usize);

/// `EVENT_CONTROL_CODE_ENABLE_PROVIDER`.
const ENABLE_PROVIDER: u32 = 1;

/// `EtwRegister(ProviderId, EnableCallback, CallbackContext, RegHandle)`:
/// `PASSIVE_LEVEL`. Failable. A running session enables the provider
/// inside the call (rule T1).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn etw_register(
    provider: *const u8,
    callback: usize,
    context: usize,
    handle: *mut u64,
) -> i32 {
    let w = enter_api("EtwRegister", PASSIVE_LEVEL);
    if provider.is_null() || handle.is_null() {
        w.kernel
            .violation("EtwRegister with a NULL provider id or handle".into());
        return status::INVALID_PARAMETER;
    }
    if callback != 0 && !w.image.is_code(callback) {
        w.kernel.violation(format!(
            "EtwRegister: enable callback {callback:#x} is not code of the image"
        ));
    }
    if w.kernel.inject("EtwRegister") {
        return status::INSUFFICIENT_RESOURCES;
    }
    let mut guid = Box::new([0u8; 16]);
    // SAFETY: the driver's provider GUID (16 bytes).
    guid.copy_from_slice(unsafe { std::slice::from_raw_parts(provider, 16) });
    let guid_ptr: *const u8 = guid.as_ptr();
    let h = w.kernel.next_etw.fetch_add(1, Ordering::Relaxed);
    lock(&w.kernel.etw).insert(h, Registration { _guid: guid });
    // SAFETY: the driver's REGHANDLE.
    unsafe { handle.write(h) };
    if let (Some((level, keywords)), true) = (w.kernel.etw_session, callback != 0) {
        // SAFETY: the image's enable callback (checked to be its code).
        let f = unsafe { std::mem::transmute::<usize, EnableCallback>(callback) };
        call_into_image(&w, "ETW enable callback", irql(), || {
            // SAFETY: PETWENABLECALLBACK's arguments: the provider id (our
            // copy, alive while registered), enable, level, keywords, no
            // filter, the driver's context.
            unsafe {
                f(
                    guid_ptr,
                    ENABLE_PROVIDER,
                    level,
                    keywords,
                    0,
                    std::ptr::null(),
                    context,
                );
            };
        });
    }
    status::SUCCESS
}

/// `EtwUnregister(RegHandle)`: `PASSIVE_LEVEL`; a registered provider (rule
/// T2).
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn etw_unregister(handle: u64) -> i32 {
    let w = enter_api("EtwUnregister", PASSIVE_LEVEL);
    if lock(&w.kernel.etw).remove(&handle).is_none() {
        w.kernel
            .violation(format!("EtwUnregister({handle:#x}): not registered"));
        return status::INVALID_HANDLE;
    }
    status::SUCCESS
}

/// Rule T2: `api` names a provider registered now.
fn registered(api: &str, max_irql: u8, handle: u64) -> bool {
    let w = enter_api(api, max_irql);
    if lock(&w.kernel.etw).contains_key(&handle) {
        true
    } else {
        w.kernel
            .violation(format!("{api}({handle:#x}): provider not registered"));
        false
    }
}

/// `EtwSetInformation(RegHandle, InformationClass, EventInformation,
/// InformationLength)`: `PASSIVE_LEVEL`; a registered provider.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn etw_set_information(
    handle: u64,
    _class: i32,
    _info: usize,
    _len: u32,
) -> i32 {
    if registered("EtwSetInformation", PASSIVE_LEVEL, handle) {
        status::SUCCESS
    } else {
        status::INVALID_HANDLE
    }
}

/// `EVENT_DATA_DESCRIPTOR`: Ptr, Size, Reserved (1: event metadata, 2:
/// provider metadata for TraceLogging).
#[repr(C)]
#[derive(Clone, Copy)]
struct DataDescriptor {
    ptr: u64,
    size: u32,
    kind: u32,
}

/// `EtwWriteTransfer(RegHandle, EventDescriptor, ActivityId,
/// RelatedActivityId, UserDataCount, UserData)`: any IRQL; a registered
/// provider; a TraceLogging event whose payload matches its metadata.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn etw_write_transfer(
    handle: u64,
    descriptor: *const u8,
    _activity: usize,
    _related: usize,
    count: u32,
    data: *const DataDescriptorRaw,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { write_event("EtwWriteTransfer", handle, descriptor, count, data) }
}

/// `EtwWrite(RegHandle, EventDescriptor, ActivityId, UserDataCount,
/// UserData)`.
///
/// # Safety
/// Called by the image (or the host on its behalf) with the arguments
/// the function's documented contract allows.
pub unsafe extern "win64" fn etw_write(
    handle: u64,
    descriptor: *const u8,
    _activity: usize,
    count: u32,
    data: *const DataDescriptorRaw,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { write_event("EtwWrite", handle, descriptor, count, data) }
}

/// Opaque `EVENT_DATA_DESCRIPTOR` as the image passes it.
pub type DataDescriptorRaw = u8;

unsafe fn write_event(
    api: &str,
    handle: u64,
    descriptor: *const u8,
    count: u32,
    data: *const DataDescriptorRaw,
) -> i32 {
    if !registered(api, HIGH_LEVEL, handle) {
        return status::INVALID_HANDLE;
    }
    let w = crate::world::world();
    if descriptor.is_null() || (count > 0 && data.is_null()) {
        w.kernel
            .violation(format!("{api}: NULL event descriptor or data"));
        return status::INVALID_PARAMETER;
    }
    // SAFETY: EVENT_DESCRIPTOR is 16 bytes; Level at 4, Keyword at 8.
    let header = unsafe { std::slice::from_raw_parts(descriptor, 16) };
    let level = header[4];
    let mut meta = None;
    let mut payload = Vec::new();
    for i in 0..count as usize {
        // SAFETY: `count` descriptors of 16 bytes at `data`.
        let d = unsafe {
            data.wrapping_add(16 * i)
                .cast::<DataDescriptor>()
                .read_unaligned()
        };
        let bytes = if d.size == 0 || d.ptr == 0 {
            &[][..]
        } else {
            // SAFETY: each descriptor names `size` readable bytes (memcheck
            // checks them).
            unsafe { std::slice::from_raw_parts(d.ptr as *const u8, d.size as usize) }
        };
        match d.kind {
            1 => meta = Some(bytes.to_vec()),
            2 => {}
            _ => payload.extend_from_slice(bytes),
        }
    }
    let Some(meta) = meta else {
        w.kernel
            .violation(format!("{api}: an event without TraceLogging metadata"));
        return status::INVALID_PARAMETER;
    };
    match decode(&meta, &payload) {
        Ok(text) => {
            w.kernel.etw_events.fetch_add(1, Ordering::Relaxed);
            w.kernel.log_line(&format!("ETW L{level} {text}"));
            status::SUCCESS
        }
        Err(e) => {
            w.kernel.violation(format!("{api}: malformed event: {e}"));
            status::INVALID_PARAMETER
        }
    }
}

fn cstr(b: &[u8], pos: usize) -> Result<(String, usize), String> {
    let end = b[pos.min(b.len())..]
        .iter()
        .position(|c| *c == 0)
        .ok_or("unterminated string")?
        + pos;
    Ok((String::from_utf8_lossy(&b[pos..end]).into_owned(), end + 1))
}

fn take<'a>(data: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8], String> {
    let slice = data
        .get(*at..*at + n)
        .ok_or_else(|| format!("payload too short at byte {}", *at))?;
    *at += n;
    Ok(slice)
}

/// Decodes a TraceLogging event into "name field=value ..."; the payload
/// must be consumed exactly (rule T4).
fn decode(meta: &[u8], data: &[u8]) -> Result<String, String> {
    let size = usize::from(u16::from_le_bytes([
        *meta.first().ok_or("empty metadata")?,
        *meta.get(1).ok_or("short metadata")?,
    ]));
    let meta = meta.get(..size).ok_or("metadata shorter than its size")?;
    let mut pos = 2;
    while meta.get(pos).is_some_and(|b| b & 0x80 != 0) {
        pos += 1;
    }
    pos += 1;
    let (name, mut pos) = cstr(meta, pos)?;
    let mut out = name.clone();
    let mut at = 0usize;
    while pos < meta.len() {
        let (field, next) = cstr(meta, pos)?;
        pos = next;
        let intype = *meta.get(pos).ok_or("field without in-type")?;
        pos += 1;
        let mut outtype = 0u8;
        if intype & 0x80 != 0 {
            outtype = *meta.get(pos).ok_or("field without out-type")?;
            pos += 1;
            if outtype & 0x80 != 0 {
                while meta.get(pos).is_some_and(|b| b & 0x80 != 0) {
                    pos += 1;
                }
                pos += 1;
            }
        }
        if intype & 0x60 != 0 {
            return Err(format!(
                "{name}.{field}: array in-type {intype:#x} is not modelled"
            ));
        }
        let value = match intype & 0x1F {
            2 => {
                let (s, next) = cstr(data, at)?;
                at = next;
                s
            }
            3 | 4 => format!("{}", take(data, &mut at, 1)?[0]),
            5 | 6 => {
                let raw: [u8; 2] = take(data, &mut at, 2)?.try_into().unwrap_or([0; 2]);
                // Out-type PORT (7): network byte order.
                let v = if outtype & 0x7F == 7 {
                    u16::from_be_bytes(raw)
                } else {
                    u16::from_le_bytes(raw)
                };
                format!("{v}")
            }
            7 | 8 | 11 | 13 | 20 => {
                let raw: [u8; 4] = take(data, &mut at, 4)?.try_into().unwrap_or([0; 4]);
                // Out-type IPV4 (8): the address bytes in network order.
                if outtype & 0x7F == 8 {
                    format!("{}.{}.{}.{}", raw[0], raw[1], raw[2], raw[3])
                } else {
                    format!("{}", u32::from_le_bytes(raw))
                }
            }
            9 | 10 | 12 | 17 | 21 => format!(
                "{}",
                u64::from_le_bytes(take(data, &mut at, 8)?.try_into().unwrap_or([0; 8]))
            ),
            15 => format!("{:02x?}", take(data, &mut at, 16)?),
            base @ (14 | 22 | 23 | 25) => {
                let n = usize::from(u16::from_le_bytes(
                    take(data, &mut at, 2)?.try_into().unwrap_or([0; 2]),
                ));
                let bytes = take(data, &mut at, n)?;
                match base {
                    23 => String::from_utf8_lossy(bytes).into_owned(),
                    22 => String::from_utf16_lossy(
                        &bytes
                            .chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]]))
                            .collect::<Vec<_>>(),
                    ),
                    _ => bytes.iter().fold(String::new(), |mut h, b| {
                        let _ = write!(h, "{b:02x}");
                        h
                    }),
                }
            }
            other => return Err(format!("{name}.{field}: in-type {other} is not modelled")),
        };
        let _ = write!(out, " {field}={value}");
    }
    if at != data.len() {
        return Err(format!(
            "{name}: {} payload bytes not described by the metadata",
            data.len() - at
        ));
    }
    Ok(out)
}
