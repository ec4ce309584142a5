//! A filter-engine session (`FwpmEngineOpen0`) implementing [`FilterEngine`].
//!
//! Each `FWPM_*0` structure is built on the stack from a plan object, with
//! every string and GUID it points to owned by the same function, and lives
//! until the `Fwpm*Add0` call returns (BFE copies what it keeps).

use std::ffi::c_void;
use std::ptr;

use wfpmon_core::catalog;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::NetworkManagement::WindowsFilteringPlatform as wfp;
use windows_sys::Win32::System::Rpc::RPC_C_AUTHN_WINNT;
use windows_sys::core::GUID;

use super::wide;
use crate::engine::{FilterEngine, Transaction};
use crate::error::{Error, Step, SystemCode};
use crate::plan::{self, Object};

/// How long `FwpmTransactionBegin0` waits for another session's
/// transaction (the documented default, stated explicitly).
const TXN_WAIT_TIMEOUT_MS: u32 = 15_000;

const fn guid(g: catalog::Guid) -> GUID {
    GUID::from_u128(g.to_u128())
}

const fn result(rc: u32) -> Result<(), SystemCode> {
    if rc == 0 {
        Ok(())
    } else {
        Err(SystemCode::from_dword(rc))
    }
}

/// An open session; closed on drop (which also aborts an open transaction).
#[derive(Debug)]
pub struct Session(HANDLE);

impl Session {
    /// Opens a session to the local engine; a `dynamic` one deletes what it
    /// added when it closes, so `install` uses a non-dynamic one.
    pub fn open(dynamic: bool) -> Result<Self, Error> {
        let mut name = wide("wfpmonctl");
        let session = wfp::FWPM_SESSION0 {
            displayData: wfp::FWPM_DISPLAY_DATA0 {
                name: name.as_mut_ptr(),
                description: ptr::null_mut(),
            },
            flags: wfp::FWPM_SESSION_FLAG_DYNAMIC * u32::from(dynamic),
            txnWaitTimeoutInMSec: TXN_WAIT_TIMEOUT_MS,
            ..wfp::FWPM_SESSION0::default()
        };
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: `session` and its string outlive the call; `handle` is a
        // valid out-pointer; null server and identity select the local
        // engine with the caller's credentials.
        let rc = unsafe {
            wfp::FwpmEngineOpen0(
                ptr::null(),
                RPC_C_AUTHN_WINNT,
                ptr::null(),
                &raw const session,
                &raw mut handle,
            )
        };
        result(rc).map(|()| Self(handle)).map_err(|c| {
            let action = "opening a filter-engine session";
            Error::system(Step::Engine, c, action, "FwpmEngineOpen0")
        })
    }

    /// Reads the flags of an object a `Fwpm*GetByKey0` call returned, then frees it.
    fn flags_of<T>(
        &self,
        get: unsafe extern "system" fn(HANDLE, *const GUID, *mut *mut T) -> u32,
        key: &GUID,
        flags: impl FnOnce(&T) -> u32,
    ) -> Result<Option<u32>, SystemCode> {
        let mut object: *mut T = ptr::null_mut();
        // SAFETY: a valid session handle, key and out-pointer.
        match result(unsafe { get(self.0, key, &raw mut object) }) {
            Err(c) if c.is_not_found() => return Ok(None),
            Err(c) => return Err(c),
            Ok(()) if object.is_null() => return Ok(None),
            Ok(()) => {}
        }
        // SAFETY: on success the engine stored a pointer to a valid object,
        // not freed yet.
        let value = flags(unsafe { &*object });
        let mut memory = object.cast::<c_void>();
        // SAFETY: `memory` came from the engine's allocator and is freed once.
        unsafe { wfp::FwpmFreeMemory0(&raw mut memory) };
        Ok(Some(value))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the handle came from FwpmEngineOpen0 and is closed once.
        unsafe { wfp::FwpmEngineClose0(self.0) };
    }
}

impl FilterEngine for Session {
    fn transaction(&mut self, op: Transaction) -> Result<(), SystemCode> {
        // SAFETY (all three): a valid session handle.
        result(match op {
            // SAFETY: as above; flags 0 is a read/write transaction.
            Transaction::Begin => unsafe { wfp::FwpmTransactionBegin0(self.0, 0) },
            // SAFETY: as above.
            Transaction::Commit => unsafe { wfp::FwpmTransactionCommit0(self.0) },
            // SAFETY: as above.
            Transaction::Abort => unsafe { wfp::FwpmTransactionAbort0(self.0) },
        })
    }

    fn add(&mut self, object: Object, persistent: bool) -> Result<(), SystemCode> {
        let mut name = wide(&object.name());
        let mut description = wide(&object.description());
        let display = wfp::FWPM_DISPLAY_DATA0 {
            name: name.as_mut_ptr(),
            description: description.as_mut_ptr(),
        };
        let (key, flags) = (guid(object.key()), object.flags(persistent));
        let mut provider = guid(catalog::PROVIDER_KEY);
        let layer = object.layer().map(guid).unwrap_or_default();
        let sd = ptr::null_mut();
        result(match object {
            Object::Provider => {
                // No service name: BFE would skip the provider's persistent
                // objects at boot unless that service starts automatically.
                let p = wfp::FWPM_PROVIDER0 {
                    providerKey: key,
                    displayData: display,
                    flags,
                    ..wfp::FWPM_PROVIDER0::default()
                };
                // SAFETY: `p` and everything it points to outlive the call.
                unsafe { wfp::FwpmProviderAdd0(self.0, &raw const p, sd) }
            }
            Object::Sublayer => {
                let s = wfp::FWPM_SUBLAYER0 {
                    subLayerKey: key,
                    displayData: display,
                    flags,
                    providerKey: &raw mut provider,
                    weight: plan::SUBLAYER_WEIGHT,
                    ..wfp::FWPM_SUBLAYER0::default()
                };
                // SAFETY: `s` and everything it points to outlive the call.
                unsafe { wfp::FwpmSubLayerAdd0(self.0, &raw const s, sd) }
            }
            Object::Callout(_) => {
                let c = wfp::FWPM_CALLOUT0 {
                    calloutKey: key,
                    displayData: display,
                    flags,
                    providerKey: &raw mut provider,
                    applicableLayer: layer,
                    ..wfp::FWPM_CALLOUT0::default()
                };
                // SAFETY: `c` and everything it points to outlive the call.
                unsafe { wfp::FwpmCalloutAdd0(self.0, &raw const c, sd, ptr::null_mut()) }
            }
            Object::Filter(i) => {
                let mut weight = plan::FILTER_WEIGHT;
                let f = wfp::FWPM_FILTER0 {
                    filterKey: key,
                    displayData: display,
                    flags,
                    providerKey: &raw mut provider,
                    layerKey: layer,
                    subLayerKey: guid(catalog::SUBLAYER_KEY),
                    weight: wfp::FWP_VALUE0 {
                        r#type: wfp::FWP_UINT64,
                        Anonymous: wfp::FWP_VALUE0_0 {
                            uint64: &raw mut weight,
                        },
                    },
                    action: wfp::FWPM_ACTION0 {
                        r#type: wfp::FWP_ACTION_CALLOUT_INSPECTION,
                        Anonymous: wfp::FWPM_ACTION0_0 {
                            calloutKey: guid(Object::Callout(i).key()),
                        },
                    },
                    ..wfp::FWPM_FILTER0::default()
                };
                // SAFETY: `f` and everything it points to (strings, provider
                // key, the 64-bit weight) outlive the call.
                unsafe { wfp::FwpmFilterAdd0(self.0, &raw const f, sd, ptr::null_mut()) }
            }
        })
    }

    fn delete(&mut self, object: Object) -> Result<(), SystemCode> {
        let delete: unsafe extern "system" fn(HANDLE, *const GUID) -> u32 = match object {
            Object::Provider => wfp::FwpmProviderDeleteByKey0,
            Object::Sublayer => wfp::FwpmSubLayerDeleteByKey0,
            Object::Callout(_) => wfp::FwpmCalloutDeleteByKey0,
            Object::Filter(_) => wfp::FwpmFilterDeleteByKey0,
        };
        let key = guid(object.key());
        // SAFETY: a valid session handle and a key that outlives the call.
        result(unsafe { delete(self.0, &raw const key) })
    }

    fn flags(&mut self, object: Object) -> Result<Option<u32>, SystemCode> {
        let key = guid(object.key());
        match object {
            Object::Provider => self.flags_of(wfp::FwpmProviderGetByKey0, &key, |o| o.flags),
            Object::Sublayer => self.flags_of(wfp::FwpmSubLayerGetByKey0, &key, |o| o.flags),
            Object::Callout(_) => self.flags_of(wfp::FwpmCalloutGetByKey0, &key, |o| o.flags),
            Object::Filter(_) => self.flags_of(wfp::FwpmFilterGetByKey0, &key, |o| o.flags),
        }
    }
}
