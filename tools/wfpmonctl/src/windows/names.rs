//! Names from Windows: the services each process hosts (service control
//! manager) and reverse-DNS lookups (`GetNameInfoW` on the system thread
//! pool). The caches and their policy are `crate::names`.

use std::ffi::c_void;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use windows_sys::Win32::Foundation::{ERROR_MORE_DATA, GetLastError};
use windows_sys::Win32::Networking::WinSock::{
    AF_INET, AF_INET6, GetNameInfoW, IN_ADDR, IN_ADDR_0, IN6_ADDR, IN6_ADDR_0, NI_MAXHOST,
    NI_NAMEREQD, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOCKADDR_INET, WSADATA, WSAStartup,
};
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, ENUM_SERVICE_STATUS_PROCESSW, EnumServicesStatusExW, OpenSCManagerW,
    SC_ENUM_PROCESS_INFO, SC_MANAGER_CONNECT, SC_MANAGER_ENUMERATE_SERVICE, SERVICE_ACTIVE,
    SERVICE_WIN32,
};
use windows_sys::Win32::System::Threading::{QueueUserWorkItem, WT_EXECUTELONGFUNCTION};

use super::Owned;
use crate::error::{Error, Step, SystemCode};
use crate::names::Lookup;

/// The running `SERVICE_WIN32` services by process: `(pid, service name)`
/// pairs (`EnumServicesStatusExW`, `SC_ENUM_PROCESS_INFO`).
// Hand-written: the windows-service crate lists services without their
// process ids; this is one call in a loop over its resume handle.
pub fn services() -> Result<Vec<(u32, String)>, Error> {
    let fail = |c, call| {
        let action = "listing the running services";
        Error::system(Step::ServiceControl, c, action, call)
    };
    let access = SC_MANAGER_CONNECT | SC_MANAGER_ENUMERATE_SERVICE;
    // SAFETY: null machine and database: the local, active database;
    // enumerating is granted to authenticated users.
    let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), access) };
    let scm = Owned::new(scm, CloseServiceHandle).map_err(|c| fail(c, "OpenSCManagerW"))?;
    // 64 KiB in u64s (the records hold pointers), enough for a few hundred
    // services per call; more come with the resume handle.
    let mut buffer = vec![0u64; 8192];
    let size = u32::try_from(buffer.len() * 8).unwrap_or(u32::MAX);
    let (mut resume, mut pairs) = (0u32, Vec::new());
    loop {
        let (mut needed, mut returned) = (0u32, 0u32);
        // SAFETY: `scm` is open with SC_MANAGER_ENUMERATE_SERVICE; the
        // buffer holds `size` bytes, aligned for the records; the out
        // pointers are valid; no group name.
        let ok = unsafe {
            EnumServicesStatusExW(
                scm.0,
                SC_ENUM_PROCESS_INFO,
                SERVICE_WIN32,
                SERVICE_ACTIVE,
                buffer.as_mut_ptr().cast(),
                size,
                &raw mut needed,
                &raw mut returned,
                &raw mut resume,
                std::ptr::null(),
            )
        };
        // SAFETY: no preconditions.
        let error = (ok == 0).then(|| unsafe { GetLastError() });
        if let Some(e) = error.filter(|&e| e != ERROR_MORE_DATA) {
            return Err(fail(SystemCode::Win32(e), "EnumServicesStatusExW"));
        }
        let records = buffer.as_ptr().cast::<ENUM_SERVICE_STATUS_PROCESSW>();
        for i in 0..returned as usize {
            // SAFETY: the call wrote `returned` records at the start of the
            // buffer, their names inside it; the buffer is not written
            // until they are read.
            let record = unsafe { &*records.wrapping_add(i) };
            // SAFETY: a NUL-terminated string in the buffer (above).
            let name = unsafe { wide_string(record.lpServiceName) };
            pairs.push((record.ServiceStatusProcess.dwProcessId, name));
        }
        if error.is_none() || (returned == 0 && needed > size) {
            // Done; or one record would not fit 64 KiB, which no service
            // name and display name (256 characters each) can make.
            return Ok(pairs);
        }
    }
}

/// The string at `p`, up to its NUL.
///
/// # Safety
/// `p` is null or points to a NUL-terminated UTF-16 string.
unsafe fn wide_string(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: within the string, up to and including its NUL (contract).
    while unsafe { *p.wrapping_add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` characters of the string (contract).
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Answers of finished lookups, shared with the thread-pool callbacks.
type Answers = Arc<Mutex<Vec<(IpAddr, Option<String>)>>>;

/// One lookup's job, owned by its callback: the socket address first (C
/// layout, so that the emulated tests read which address a work item asks
/// for when it is queued).
#[repr(C)]
struct Job {
    sockaddr: SOCKADDR_INET,
    addr: IpAddr,
    answers: Answers,
}

/// Reverse-DNS lookups on the system thread pool: each runs `GetNameInfoW`
/// (`NI_NAMEREQD`: a name or nothing) in its own work item, which never
/// blocks the caller, and leaves its answer in `answers`.
#[derive(Debug, Default)]
pub struct PoolLookup {
    answers: Answers,
    /// Winsock is started (`WSAStartup`, once; never cleaned up: the
    /// process exits with it).
    started: Option<bool>,
}

/// The work item: one lookup.
///
/// It touches no thread-local state (no `std::thread` either), so it runs
/// on any thread the pool has — and, in the tests, on the emulator's one
/// thread at a moment the test chooses.
unsafe extern "system" fn look_up(context: *mut c_void) -> u32 {
    // SAFETY: `context` is the `Box<Job>` `start` leaked for this one call.
    let job = unsafe { Box::from_raw(context.cast::<Job>()) };
    let name = reverse(&job.sockaddr);
    let mut answers = job.answers.lock().unwrap_or_else(PoisonError::into_inner);
    answers.push((job.addr, name));
    0
}

/// The socket address of `addr` (port 0).
fn sockaddr(addr: IpAddr) -> SOCKADDR_INET {
    match addr {
        IpAddr::V4(a) => SOCKADDR_INET {
            Ipv4: SOCKADDR_IN {
                sin_family: AF_INET,
                sin_addr: IN_ADDR {
                    S_un: IN_ADDR_0 {
                        S_addr: u32::from_ne_bytes(a.octets()),
                    },
                },
                ..SOCKADDR_IN::default()
            },
        },
        IpAddr::V6(a) => SOCKADDR_INET {
            Ipv6: SOCKADDR_IN6 {
                sin6_family: AF_INET6,
                sin6_addr: IN6_ADDR {
                    u: IN6_ADDR_0 { Byte: a.octets() },
                },
                ..SOCKADDR_IN6::default()
            },
        },
    }
}

/// The name of the address in `sockaddr` (`GetNameInfoW`, waiting for
/// the resolver).
fn reverse(sockaddr: &SOCKADDR_INET) -> Option<String> {
    let mut host = [0u16; NI_MAXHOST as usize];
    // SAFETY: every variant starts with the family.
    let v4 = unsafe { sockaddr.si_family } == AF_INET;
    let len = if v4 {
        size_of::<SOCKADDR_IN>()
    } else {
        size_of::<SOCKADDR_IN6>()
    };
    let len = i32::try_from(len).ok()?;
    // SAFETY: `sockaddr` holds a socket address of its family, `len` bytes,
    // that outlives the call; `host` holds NI_MAXHOST characters; no service.
    let rc = unsafe {
        GetNameInfoW(
            std::ptr::from_ref(sockaddr).cast::<SOCKADDR>(),
            len,
            host.as_mut_ptr(),
            NI_MAXHOST,
            std::ptr::null_mut(),
            0,
            NI_NAMEREQD.cast_signed(),
        )
    };
    let end = host.iter().position(|&c| c == 0).unwrap_or(host.len());
    (rc == 0 && end > 0).then(|| String::from_utf16_lossy(&host[..end]))
}

impl Lookup for PoolLookup {
    fn start(&mut self, addr: IpAddr) -> bool {
        let started = *self.started.get_or_insert_with(|| {
            let mut data = WSADATA::default();
            // SAFETY: `data` is a valid out-pointer; version 2.2.
            unsafe { WSAStartup(0x0202, &raw mut data) == 0 }
        });
        if !started {
            return false;
        }
        let job = Box::new(Job {
            sockaddr: sockaddr(addr),
            addr,
            answers: Arc::clone(&self.answers),
        });
        let context = Box::into_raw(job);
        // SAFETY: `look_up` takes ownership of `context` when it runs;
        // WT_EXECUTELONGFUNCTION: it may wait for the resolver.
        let queued =
            unsafe { QueueUserWorkItem(Some(look_up), context.cast(), WT_EXECUTELONGFUNCTION) };
        if queued == 0 {
            // SAFETY: not queued: the job is still this function's.
            drop(unsafe { Box::from_raw(context) });
        }
        queued != 0
    }

    fn finished(&mut self) -> Vec<(IpAddr, Option<String>)> {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *answers)
    }
}
