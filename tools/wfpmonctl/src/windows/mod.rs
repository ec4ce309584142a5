//! The Windows [`System`].
//!
//! The filter engine (`fwpm`), the control device (`DeviceIoControl`), the
//! service control manager, process names and the console. The only module
//! with `unsafe` code; every decision is left to the portable modules.

mod fwpm;
mod names;
pub mod overlapped;

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime};

use wfpmon_core::catalog;
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_SERVICE_DOES_NOT_EXIST, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING, QueryDosDeviceW,
};
use windows_sys::Win32::System::Console::{
    CTRL_BREAK_EVENT, CTRL_C_EVENT, ENABLE_VIRTUAL_TERMINAL_PROCESSING, ENABLE_WINDOW_INPUT,
    GetConsoleMode, GetStdHandle, STD_OUTPUT_HANDLE, SetConsoleCtrlHandler, SetConsoleMode,
};
use windows_sys::Win32::System::Diagnostics::Debug::{
    FORMAT_MESSAGE_FROM_HMODULE, FORMAT_MESSAGE_FROM_SYSTEM, FORMAT_MESSAGE_IGNORE_INSERTS,
    FormatMessageW,
};
use windows_sys::Win32::System::IO::CancelIoEx;
use windows_sys::Win32::System::LibraryLoader::GetModuleHandleW;
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, OpenSCManagerW, OpenServiceW, QueryServiceStatusEx, SC_MANAGER_CONNECT,
    SC_STATUS_PROCESS_INFO, SERVICE_QUERY_STATUS, SERVICE_STATUS_PROCESS,
};
use windows_sys::Win32::System::Threading::{
    OpenProcess, PROCESS_NAME_WIN32, PROCESS_QUERY_LIMITED_INFORMATION, QueryFullProcessImageNameW,
};
use windows_sys::core::BOOL;

use crate::app::{System, Terminal};
use crate::device::{ControlDevice, IoctlError};
use crate::error::{Error, Step, SystemCode};
use crate::status::service_state_name;

/// A NUL-terminated UTF-16 copy of `s`.
fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The calling thread's last Win32 error.
fn last_error() -> SystemCode {
    // SAFETY: no preconditions.
    SystemCode::Win32(unsafe { GetLastError() })
}

/// A handle this process opened; closed once, on drop.
#[derive(Debug)]
struct Owned(HANDLE, Close);

type Close = unsafe extern "system" fn(HANDLE) -> BOOL;

impl Owned {
    /// `handle` unless it is null or `INVALID_HANDLE_VALUE` (then the last error).
    fn new(handle: HANDLE, close: Close) -> Result<Self, SystemCode> {
        if handle.is_null() || handle == INVALID_HANDLE_VALUE {
            Err(last_error())
        } else {
            Ok(Self(handle, close))
        }
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by this process, `close` is its
        // closing function, and it is closed only here.
        unsafe { (self.1)(self.0) };
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The open control device, whose requests Ctrl+C cancels (null: none).
static DEVICE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Console control handler (it runs on a thread of its own): Ctrl+C and
/// Ctrl+Break end a refresh loop quietly instead of killing the process,
/// and cancel a request pending in the driver (`events --follow`), which
/// then completes with `STATUS_CANCELLED` (`ERROR_OPERATION_ABORTED`).
// Hand-written rather than the ctrlc crate: that crate runs its closure on
// a thread it spawns, waiting for a semaphore the handler releases; this
// handler cancels the pending request itself, on the console's thread, at
// once (and the emulated tests run it as the console would, with no other
// thread).
unsafe extern "system" fn on_ctrl(event: u32) -> BOOL {
    let handled = event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT;
    if handled {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let device = DEVICE.load(Ordering::SeqCst);
        if !device.is_null() {
            // SAFETY: a handle of this process; `Device` clears `DEVICE`
            // before it closes it (should it close in between, the call
            // fails with an invalid handle). A null OVERLAPPED cancels every
            // request of the handle, from any thread; none: ERROR_NOT_FOUND.
            unsafe { CancelIoEx(device, std::ptr::null()) };
        }
    }
    BOOL::from(handled)
}

/// `not_installed` or the [`service_state_name`] of service `name`.
fn service_state(name: &str) -> Result<&'static str, Error> {
    let fail = |c, call: &str| {
        let action = format!("asking the service control manager about service {name}");
        Error::system(Step::ServiceControl, c, &action, call)
    };
    // SAFETY: null machine and database select the local, active
    // database; SC_MANAGER_CONNECT is granted to every user.
    let scm = unsafe { OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT) };
    let scm = Owned::new(scm, CloseServiceHandle).map_err(|c| fail(c, "OpenSCManagerW"))?;
    let wname = wide(name);
    // SAFETY: `scm` is open; `wname` is NUL-terminated and outlives the call.
    let service = unsafe { OpenServiceW(scm.0, wname.as_ptr(), SERVICE_QUERY_STATUS) };
    let service = match Owned::new(service, CloseServiceHandle) {
        Ok(s) => s,
        Err(SystemCode::Win32(ERROR_SERVICE_DOES_NOT_EXIST)) => return Ok("not_installed"),
        Err(c) => return Err(fail(c, &format!("OpenServiceW({name})"))),
    };
    let mut status = SERVICE_STATUS_PROCESS::default();
    let mut needed = 0u32;
    let size = u32::try_from(size_of::<SERVICE_STATUS_PROCESS>()).unwrap_or(u32::MAX);
    // SAFETY: `service` is open with SERVICE_QUERY_STATUS; `status` is a
    // writable SERVICE_STATUS_PROCESS of `size` bytes; `needed` is valid.
    let ok = unsafe {
        QueryServiceStatusEx(
            service.0,
            SC_STATUS_PROCESS_INFO,
            (&raw mut status).cast(),
            size,
            &raw mut needed,
        )
    };
    if ok == 0 {
        return Err(fail(last_error(), &format!("QueryServiceStatusEx({name})")));
    }
    Ok(service_state_name(status.dwCurrentState))
}

/// The Windows system.
#[derive(Debug)]
pub struct Windows {
    start: Instant,
    /// Standard output and its console mode before virtual-terminal
    /// processing was turned on, set back on drop.
    output_mode: Option<(HANDLE, u32)>,
    /// The console input (`CONIN$`) and its mode before the live view, set
    /// back on drop.
    input_mode: Option<(Owned, u32)>,
}

impl Windows {
    /// Installs the Ctrl+C handler.
    pub fn new() -> Self {
        // SAFETY: `on_ctrl` is a handler routine that lives as long as the
        // process and only stores to an atomic.
        unsafe { SetConsoleCtrlHandler(Some(on_ctrl), 1) };
        let start = Instant::now();
        Self {
            start,
            output_mode: None,
            input_mode: None,
        }
    }

    /// Opens the console input and turns window-size events on, keeping
    /// the mode found for `Drop`.
    fn window_input(&mut self) {
        if self.input_mode.is_some() {
            return;
        }
        // The console's input buffer even when standard input is
        // redirected, as crossterm opens it.
        let name = wide("CONIN$");
        // SAFETY: `name` is NUL-terminated and outlives the call; no
        // security attributes, no template.
        let handle = unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                std::ptr::null(),
                OPEN_EXISTING,
                0,
                std::ptr::null_mut(),
            )
        };
        let Ok(input) = Owned::new(handle, CloseHandle) else {
            return;
        };
        let mut mode = 0;
        // SAFETY: `input` is open; `mode` is a valid out-pointer.
        if unsafe { GetConsoleMode(input.0, &raw mut mode) } == 0 {
            return;
        }
        // Window-size events (WINDOW_BUFFER_SIZE_RECORD) reach the input
        // buffer only in window-aware mode; crossterm's raw mode keeps the
        // bit, so a resize repaints at once rather than at the next refresh.
        // SAFETY: `input` is a console input handle.
        unsafe { SetConsoleMode(input.0, mode | ENABLE_WINDOW_INPUT) };
        self.input_mode = Some((input, mode));
    }
}

/// The console modes to set back if wfpmonctl panics in the live view: the
/// release build aborts on a panic (`panic = "abort"`), so `Drop for
/// Windows` would not run. Handles by address (a `HANDLE` is not `Send`);
/// emptied by `Drop for Windows` before it closes them.
static MODES_TO_SET_BACK: Mutex<Vec<(usize, u32)>> = Mutex::new(Vec::new());

/// Keeps `saved` for the panic hook, installed once: it sets those modes
/// back, then reports the panic as the hook before it did. ratatui's hook,
/// installed after this one by `ratatui::try_init`, runs first, so raw mode
/// and the alternate screen are left while VT processing is still on.
fn set_modes_back_on_panic(saved: Vec<(usize, u32)>) {
    static HOOK: Once = Once::new();
    if let Ok(mut modes) = MODES_TO_SET_BACK.lock() {
        *modes = saved;
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_lock: a panic while the lock is held must not deadlock.
            if let Ok(mut modes) = MODES_TO_SET_BACK.try_lock() {
                for (handle, mode) in modes.drain(..) {
                    // SAFETY: the handle is standard output or the open
                    // console input: `Drop for Windows` empties the list
                    // before it closes the input; a failure changes nothing.
                    unsafe { SetConsoleMode(std::ptr::with_exposed_provenance_mut(handle), mode) };
                }
            }
            previous(info);
        }));
    });
}

/// The console as wfpmonctl found it: the modes it changed are set back
/// exactly (crossterm's `disable_raw_mode` only turns its three bits back
/// on, and nothing turns virtual-terminal processing off). The live view
/// has already left raw mode and the alternate screen by then.
impl Drop for Windows {
    fn drop(&mut self) {
        // The panic hook must not touch these handles once they are closed.
        if let Ok(mut modes) = MODES_TO_SET_BACK.lock() {
            modes.clear();
        }
        if let Some((input, mode)) = self.input_mode.take() {
            // SAFETY: `input` is the open console input handle; a failure
            // leaves the mode as it is, which nothing could do better.
            unsafe { SetConsoleMode(input.0, mode) };
        }
        if let Some((output, mode)) = self.output_mode.take() {
            // SAFETY: `output` is standard output, a console screen buffer
            // (its mode was read); as above, a failure is left alone.
            unsafe { SetConsoleMode(output, mode) };
        }
    }
}

/// The open control device (opened for overlapped I/O, so that Ctrl+C can
/// cancel a pending request).
pub struct Device {
    io: overlapped::Overlapped,
}

impl Drop for Device {
    fn drop(&mut self) {
        DEVICE.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

/// wfpmonctl's policy for a pending request: Ctrl+C before it was pending
/// found nothing to cancel, so it is cancelled then; a request pending for
/// a second (`events --follow`) is cancelled when the driver's service is
/// stopping — the I/O manager calls a driver's Unload only when no handle
/// to its device is open and no request is outstanding ("Unload Routine
/// Environment"), so a stop of the service waits for this one.
struct Interactive;

impl overlapped::Pending for Interactive {
    fn pending(&mut self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    fn waited(&mut self) -> bool {
        matches!(
            service_state(catalog::SERVICE_NAME),
            Ok("stop_pending" | "stopped")
        )
    }
}

impl ControlDevice for Device {
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        self.io.request(
            code,
            input,
            output,
            Duration::from_secs(1),
            &mut Interactive,
        )
    }
}

impl System for Windows {
    type Engine = fwpm::Session;
    type Device = Device;
    type Lookup = names::PoolLookup;

    fn engine(&mut self, dynamic: bool) -> Result<fwpm::Session, Error> {
        fwpm::Session::open(dynamic)
    }

    fn device(&mut self, write: bool) -> Result<Device, Error> {
        let access = GENERIC_READ | if write { GENERIC_WRITE } else { 0 };
        let io =
            overlapped::Overlapped::open(catalog::DEVICE_USER_PATH, access).map_err(
                |e| match e {
                    overlapped::OpenError::CreateFile(c) => Error::system(
                        Step::OpenDevice,
                        SystemCode::Win32(c),
                        "opening the wfpmon control device",
                        format!("CreateFileW({})", catalog::DEVICE_USER_PATH),
                    ),
                    overlapped::OpenError::CreateEvent(c) => Error::system(
                        Step::OpenDevice,
                        SystemCode::Win32(c),
                        "creating an event for overlapped I/O",
                        "CreateEventW",
                    ),
                },
            )?;
        DEVICE.store(io.handle(), Ordering::SeqCst);
        Ok(Device { io })
    }

    fn service_state(&mut self, name: &str) -> Result<&'static str, Error> {
        service_state(name)
    }

    fn process_name(&mut self, pid: u64) -> Option<String> {
        let pid = u32::try_from(pid).ok()?;
        // SAFETY: no pointer arguments; a failure returns null.
        let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        let process = Owned::new(process, CloseHandle).ok()?;
        let mut buffer = [0u16; 1024];
        let mut len = u32::try_from(buffer.len()).ok()?;
        // SAFETY: the process handle is open with the access the call needs;
        // `buffer` holds `len` characters and `len` is a valid in/out pointer.
        let ok = unsafe {
            QueryFullProcessImageNameW(
                process.0,
                PROCESS_NAME_WIN32,
                buffer.as_mut_ptr(),
                &raw mut len,
            )
        };
        let path = String::from_utf16_lossy(buffer.get(..len as usize)?);
        (ok != 0).then(|| path.rsplit('\\').next().unwrap_or(&path).to_owned())
    }

    fn dos_devices(&mut self) -> Vec<(String, String)> {
        let mut drives = Vec::new();
        for letter in 'A'..='Z' {
            let drive = format!("{letter}:");
            let name = wide(&drive);
            let mut target = [0u16; 512];
            // SAFETY: `name` is NUL-terminated; `target` holds the length
            // passed. The answer is a list of NUL-terminated strings, the
            // current mapping first; 0 for an unmapped letter.
            let n = unsafe { QueryDosDeviceW(name.as_ptr(), target.as_mut_ptr(), 512) };
            let first = target
                .get(..n as usize)
                .and_then(|t| t.split(|&u| u == 0).next());
            if let Some(device) = first.filter(|d| !d.is_empty()) {
                drives.push((drive, String::from_utf16_lossy(device)));
            }
        }
        drives
    }

    fn terminal(&mut self) -> Option<Terminal> {
        // The width from the terminal_size crate; None: stdout is no console.
        let (terminal_size::Width(width), _) = terminal_size::terminal_size()?;
        // SAFETY: no preconditions.
        let out = unsafe { GetStdHandle(STD_OUTPUT_HANDLE) };
        let mut mode = 0;
        // SAFETY: `mode` is a valid out-pointer; a handle that is not a
        // console makes the call fail.
        if unsafe { GetConsoleMode(out, &raw mut mode) } == 0 {
            return None;
        }
        // SAFETY: `out` is a console output handle.
        let vt = unsafe { SetConsoleMode(out, mode | ENABLE_VIRTUAL_TERMINAL_PROCESSING) } != 0;
        if vt && mode & ENABLE_VIRTUAL_TERMINAL_PROCESSING == 0 && self.output_mode.is_none() {
            self.output_mode = Some((out, mode));
        }
        let width = usize::from(width);
        Some(Terminal { width, vt })
    }

    fn console_input(&mut self) {
        self.window_input();
        // The modes saved so far (input first, as on drop) for a panic.
        let saved = self
            .input_mode
            .iter()
            .map(|(input, mode)| (input.0, *mode))
            .chain(self.output_mode)
            .map(|(handle, mode)| (handle.expose_provenance(), mode))
            .collect();
        set_modes_back_on_panic(saved);
    }

    fn now(&mut self) -> (SystemTime, Duration) {
        (SystemTime::now(), self.start.elapsed())
    }

    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn interrupted(&mut self) -> bool {
        INTERRUPTED.load(Ordering::SeqCst)
    }

    fn message_text(&mut self, code: SystemCode) -> Option<String> {
        message_text(code)
    }

    fn utc_offset(&mut self, time: SystemTime) -> i32 {
        crate::view::units::local_offset(time)
    }

    fn warn(&mut self, text: &str) {
        eprint!("wfpmonctl: {text}");
    }

    fn services(&mut self) -> Result<Vec<(u32, String)>, Error> {
        names::services()
    }

    fn lookup(&mut self) -> names::PoolLookup {
        names::PoolLookup::default()
    }
}

/// The system's message text for `code` (`FormatMessageW`, in the user's
/// language): Win32 errors and HRESULTs from the system's message table
/// (`FWP_E_*` also from fwpuclnt.dll's, should the system's lack them),
/// `NTSTATUS` values from ntdll.dll's.
fn message_text(code: SystemCode) -> Option<String> {
    let (id, modules): (u32, &[&str]) = match code {
        SystemCode::Win32(c) => (c, &[""]),
        SystemCode::HResult(h) => (h.cast_unsigned(), &["", "fwpuclnt.dll"]),
        SystemCode::NtStatus(s) => (s, &["ntdll.dll"]),
    };
    modules.iter().find_map(|module| {
        let source = if module.is_empty() {
            std::ptr::null_mut()
        } else {
            let name = wide(module);
            // SAFETY: `name` is NUL-terminated; a module of this process
            // (both are loaded: ntdll always, fwpuclnt as an import), no
            // reference taken.
            let handle = unsafe { GetModuleHandleW(name.as_ptr()) };
            if handle.is_null() {
                return None;
            }
            handle
        };
        let from = if source.is_null() {
            FORMAT_MESSAGE_FROM_SYSTEM
        } else {
            FORMAT_MESSAGE_FROM_HMODULE
        };
        let mut buffer = [0u16; 1024];
        // SAFETY: `buffer` holds the length passed; the source is null or a
        // loaded module; no inserts are read (IGNORE_INSERTS), so no
        // arguments are passed; language 0: the user's, with fallbacks.
        let n = unsafe {
            FormatMessageW(
                from | FORMAT_MESSAGE_IGNORE_INSERTS,
                source.cast_const(),
                id,
                0,
                buffer.as_mut_ptr(),
                1024,
                std::ptr::null(),
            )
        };
        let text = String::from_utf16_lossy(buffer.get(..n as usize)?);
        let text = text.trim_end().to_owned();
        (!text.is_empty()).then_some(text)
    })
}
