//! A filter-engine session (`FwpmEngineOpen0`) implementing
//! [`FilterEngine`].
//!
//! Each `FWPM_*0` structure is built on the stack from a plan object, with
//! every string and GUID it points to owned by the same function, and lives
//! until the `Fwpm*Add0` call returns (BFE copies what it keeps).

use std::ffi::c_void;
use std::ptr;

use ::windows::Win32::Foundation::HANDLE;
use ::windows::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWP_ACTION_TYPE, FWP_BYTE_BLOB, FWP_UINT64, FWP_VALUE0, FWP_VALUE0_0, FWPM_ACTION0,
    FWPM_ACTION0_0, FWPM_CALLOUT0, FWPM_DISPLAY_DATA0, FWPM_FILTER_FLAGS, FWPM_FILTER0,
    FWPM_PROVIDER0, FWPM_SESSION_FLAG_DYNAMIC, FWPM_SESSION0, FWPM_SUBLAYER0, FwpmCalloutAdd0,
    FwpmCalloutDeleteByKey0, FwpmCalloutGetByKey0, FwpmEngineClose0, FwpmEngineOpen0,
    FwpmFilterAdd0, FwpmFilterDeleteByKey0, FwpmFilterGetByKey0, FwpmFreeMemory0, FwpmProviderAdd0,
    FwpmProviderDeleteByKey0, FwpmProviderGetByKey0, FwpmSubLayerAdd0, FwpmSubLayerDeleteByKey0,
    FwpmSubLayerGetByKey0, FwpmTransactionAbort0, FwpmTransactionBegin0, FwpmTransactionCommit0,
};
use ::windows::Win32::System::Rpc::RPC_C_AUTHN_WINNT;
use ::windows::core::{GUID, PCWSTR, PWSTR};
use wfpmon_core::catalog::Guid;

use super::{system, to_guid};
use crate::app;
use crate::engine::FilterEngine;
use crate::exit::{Error, SystemCode};
use crate::plan::{CalloutObject, FilterSpec, Object, ObjectKind, ProviderSpec, SublayerSpec};

/// How long `FwpmTransactionBegin0` waits for another session's transaction
/// (the documented default, stated explicitly).
pub const TXN_WAIT_TIMEOUT_MS: u32 = 15_000;

/// `FwpmTransactionBegin0` flags for a read/write transaction.
const TXN_READ_WRITE: u32 = 0;

/// A NUL-terminated UTF-16 copy of `s`.
#[must_use]
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

const fn display(name: &mut [u16], description: &mut [u16]) -> FWPM_DISPLAY_DATA0 {
    FWPM_DISPLAY_DATA0 {
        name: PWSTR(name.as_mut_ptr()),
        description: PWSTR(description.as_mut_ptr()),
    }
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
pub struct Session {
    handle: HANDLE,
}

impl Session {
    /// Opens a session to the local filter engine. `dynamic` sessions delete
    /// what they added when they close: `install` uses a non-dynamic one.
    ///
    /// # Errors
    /// The classified failure; a stopped BFE gives [`crate::exit::Kind::BfeNotRunning`].
    pub fn open(dynamic: bool) -> Result<Self, Error> {
        let mut name = wide("wfpmonctl");
        let mut description = wide("wfpmon control tool");
        let session = FWPM_SESSION0 {
            displayData: display(&mut name, &mut description),
            flags: if dynamic {
                FWPM_SESSION_FLAG_DYNAMIC
            } else {
                0
            },
            txnWaitTimeoutInMSec: TXN_WAIT_TIMEOUT_MS,
            ..FWPM_SESSION0::default()
        };
        let mut handle = HANDLE::default();
        // SAFETY: `session` and the strings it points to outlive the call;
        // `handle` is a valid out-pointer; a null server name and no
        // identity select the local engine with the caller's credentials.
        let rc = unsafe {
            FwpmEngineOpen0(
                PCWSTR::null(),
                RPC_C_AUTHN_WINNT,
                None,
                Some(&raw const session),
                &raw mut handle,
            )
        };
        match result(rc) {
            Ok(()) => Ok(Self { handle }),
            Err(code) => Err(app::engine_open_error(
                code,
                system::service_state(system::BFE_SERVICE_NAME).ok(),
            )),
        }
    }

    fn add_provider(&self, p: &ProviderSpec) -> u32 {
        let mut name = wide(&p.name);
        let mut description = wide(&p.description);
        let provider = FWPM_PROVIDER0 {
            providerKey: to_guid(p.key),
            displayData: display(&mut name, &mut description),
            flags: p.flags,
            providerData: FWP_BYTE_BLOB::default(),
            // No service name: BFE would then skip the provider's persistent
            // objects at boot unless the (demand-start) service auto-starts.
            serviceName: PWSTR::null(),
        };
        // SAFETY: `provider` and everything it points to outlive the call.
        unsafe { FwpmProviderAdd0(self.handle, &raw const provider, None) }
    }

    fn add_sublayer(&self, s: &SublayerSpec) -> u32 {
        let mut name = wide(&s.name);
        let mut description = wide(&s.description);
        let mut provider_key = to_guid(s.provider_key);
        let sublayer = FWPM_SUBLAYER0 {
            subLayerKey: to_guid(s.key),
            displayData: display(&mut name, &mut description),
            flags: s.flags,
            providerKey: &raw mut provider_key,
            providerData: FWP_BYTE_BLOB::default(),
            weight: s.weight,
        };
        // SAFETY: `sublayer` and everything it points to outlive the call.
        unsafe { FwpmSubLayerAdd0(self.handle, &raw const sublayer, None) }
    }

    fn add_callout(&self, c: &CalloutObject) -> u32 {
        let mut name = wide(&c.name);
        let mut description = wide(&c.description);
        let mut provider_key = to_guid(c.provider_key);
        let callout = FWPM_CALLOUT0 {
            calloutKey: to_guid(c.key),
            displayData: display(&mut name, &mut description),
            flags: c.flags,
            providerKey: &raw mut provider_key,
            providerData: FWP_BYTE_BLOB::default(),
            applicableLayer: to_guid(c.layer),
            calloutId: 0,
        };
        // SAFETY: `callout` and everything it points to outlive the call.
        unsafe { FwpmCalloutAdd0(self.handle, &raw const callout, None, None) }
    }

    fn add_filter(&self, f: &FilterSpec) -> u32 {
        let mut name = wide(&f.name);
        let mut description = wide(&f.description);
        let mut provider_key = to_guid(f.provider_key);
        let mut weight = f.weight;
        let filter = FWPM_FILTER0 {
            filterKey: to_guid(f.key),
            displayData: display(&mut name, &mut description),
            flags: FWPM_FILTER_FLAGS(f.flags),
            providerKey: &raw mut provider_key,
            providerData: FWP_BYTE_BLOB::default(),
            layerKey: to_guid(f.layer),
            subLayerKey: to_guid(f.sublayer),
            weight: FWP_VALUE0 {
                r#type: FWP_UINT64,
                Anonymous: FWP_VALUE0_0 {
                    uint64: &raw mut weight,
                },
            },
            numFilterConditions: 0,
            filterCondition: ptr::null_mut(),
            action: FWPM_ACTION0 {
                r#type: FWP_ACTION_TYPE(f.action.raw()),
                Anonymous: FWPM_ACTION0_0 {
                    calloutKey: to_guid(f.callout_key),
                },
            },
            ..FWPM_FILTER0::default()
        };
        // SAFETY: `filter` and everything it points to (strings, provider
        // key, the 64-bit weight) outlive the call.
        unsafe { FwpmFilterAdd0(self.handle, &raw const filter, None, None) }
    }

    /// Reads one field of an object an `Fwpm*GetByKey0` call returned, then
    /// frees the object.
    fn fetched<T>(
        rc: u32,
        object: *mut T,
        read: impl FnOnce(&T) -> u32,
    ) -> Result<Option<u32>, SystemCode> {
        if let Err(code) = result(rc) {
            return if code.is_not_found() {
                Ok(None)
            } else {
                Err(code)
            };
        }
        if object.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the engine stored a pointer to a valid,
        // engine-allocated object, not freed yet.
        let value = read(unsafe { &*object });
        let mut memory = object.cast::<c_void>();
        // SAFETY: `memory` came from the engine's allocator and is freed once.
        unsafe { FwpmFreeMemory0(&raw mut memory) };
        Ok(Some(value))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the handle came from FwpmEngineOpen0 and is closed once.
        let _ = unsafe { FwpmEngineClose0(self.handle) };
    }
}

impl FilterEngine for Session {
    fn begin(&mut self) -> Result<(), SystemCode> {
        // SAFETY: a valid session handle.
        result(unsafe { FwpmTransactionBegin0(self.handle, TXN_READ_WRITE) })
    }

    fn commit(&mut self) -> Result<(), SystemCode> {
        // SAFETY: a valid session handle.
        result(unsafe { FwpmTransactionCommit0(self.handle) })
    }

    fn abort(&mut self) -> Result<(), SystemCode> {
        // SAFETY: a valid session handle.
        result(unsafe { FwpmTransactionAbort0(self.handle) })
    }

    fn add(&mut self, object: &Object) -> Result<(), SystemCode> {
        result(match object {
            Object::Provider(p) => self.add_provider(p),
            Object::Sublayer(s) => self.add_sublayer(s),
            Object::Callout(c) => self.add_callout(c),
            Object::Filter(f) => self.add_filter(f),
        })
    }

    fn delete(&mut self, kind: ObjectKind, key: &Guid) -> Result<(), SystemCode> {
        let key: GUID = to_guid(*key);
        let h = self.handle;
        result(match kind {
            // SAFETY: a valid session handle and a key that outlives the call.
            ObjectKind::Provider => unsafe { FwpmProviderDeleteByKey0(h, &raw const key) },
            // SAFETY: as above.
            ObjectKind::Sublayer => unsafe { FwpmSubLayerDeleteByKey0(h, &raw const key) },
            // SAFETY: as above.
            ObjectKind::Callout => unsafe { FwpmCalloutDeleteByKey0(h, &raw const key) },
            // SAFETY: as above.
            ObjectKind::Filter => unsafe { FwpmFilterDeleteByKey0(h, &raw const key) },
        })
    }

    fn get_flags(&mut self, kind: ObjectKind, key: &Guid) -> Result<Option<u32>, SystemCode> {
        let key: GUID = to_guid(*key);
        let h = self.handle;
        match kind {
            ObjectKind::Provider => {
                let mut p: *mut FWPM_PROVIDER0 = ptr::null_mut();
                // SAFETY: valid handle, key and out-pointer.
                let rc = unsafe { FwpmProviderGetByKey0(h, &raw const key, &raw mut p) };
                Self::fetched(rc, p, |o| o.flags)
            }
            ObjectKind::Sublayer => {
                let mut p: *mut FWPM_SUBLAYER0 = ptr::null_mut();
                // SAFETY: valid handle, key and out-pointer.
                let rc = unsafe { FwpmSubLayerGetByKey0(h, &raw const key, &raw mut p) };
                Self::fetched(rc, p, |o| o.flags)
            }
            ObjectKind::Callout => {
                let mut p: *mut FWPM_CALLOUT0 = ptr::null_mut();
                // SAFETY: valid handle, key and out-pointer.
                let rc = unsafe { FwpmCalloutGetByKey0(h, &raw const key, &raw mut p) };
                Self::fetched(rc, p, |o| o.flags)
            }
            ObjectKind::Filter => {
                let mut p: *mut FWPM_FILTER0 = ptr::null_mut();
                // SAFETY: valid handle, key and out-pointer.
                let rc = unsafe { FwpmFilterGetByKey0(h, &raw const key, &raw mut p) };
                Self::fetched(rc, p, |o| o.flags.0)
            }
        }
    }
}
