//! A fault inside the image (SIGSEGV, SIGBUS, SIGILL) reports the faulting
//! instruction as an *image offset* before the process dies: no unwinder
//! walks through the Windows code, so a backtrace alone would only say
//! "???". Look the offset up in the image's map or disassembly
//! (`llvm-objdump -d --start-address=0x180000000+offset wfpmon.sys`).

use std::sync::atomic::{AtomicUsize, Ordering};

static BASE: AtomicUsize = AtomicUsize::new(0);
static SIZE: AtomicUsize = AtomicUsize::new(0);

static INSTALLED: std::sync::Once = std::sync::Once::new();

/// Records where the current image is mapped (0, 0: none) and installs the
/// handlers once.
pub fn set_image(base: usize, size: usize) {
    BASE.store(base, Ordering::SeqCst);
    SIZE.store(size, Ordering::SeqCst);
    INSTALLED.call_once(|| {
        for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL] {
            // SAFETY: a zeroed sigaction is a valid starting value (no
            // flags, empty mask, null handler) that is filled in below.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_ONSTACK;
            // SAFETY: installs a handler that only calls async-signal-safe
            // functions (write) and then returns to the faulting
            // instruction with the default action restored (SA_RESETHAND).
            unsafe { libc::sigaction(signal, &raw const action, std::ptr::null_mut()) };
        }
    });
}

fn hex(mut value: usize, out: &mut [u8; 18]) -> &[u8] {
    out[0] = b'0';
    out[1] = b'x';
    for i in (2..18).rev() {
        let digit = u8::try_from(value & 0xF).unwrap_or(0);
        out[i] = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        value >>= 4;
    }
    &out[..]
}

fn say(bytes: &[u8]) {
    // SAFETY: write(2) is async-signal-safe; the buffer is valid.
    unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

extern "C" fn on_fault(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    let ucontext = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes the interrupted context to an SA_SIGINFO
    // handler; RIP is one of its general registers.
    let rip_register = unsafe { (*ucontext).uc_mcontext.gregs[libc::REG_RIP as usize] };
    let rip = usize::try_from(rip_register.cast_unsigned()).unwrap_or(0);
    // SAFETY: the kernel passes valid siginfo to an SA_SIGINFO handler.
    let siginfo = unsafe { &*info };
    // SAFETY: si_addr is the faulting address for these signals.
    let address = unsafe { siginfo.si_addr() } as usize;
    let (base, size) = (BASE.load(Ordering::SeqCst), SIZE.load(Ordering::SeqCst));
    let mut buf = [0u8; 18];
    say(b"\nwfpmon-native-host: fatal signal ");
    say(match signal {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGBUS => b"SIGBUS",
        _ => b"SIGILL",
    });
    say(b" at rip ");
    say(hex(rip, &mut buf));
    if base != 0 && rip >= base && rip < base + size {
        say(b" = wfpmon.sys image offset ");
        say(hex(rip - base, &mut buf));
        say(b" (linked address 0x180000000 + offset)");
    } else {
        say(b" (outside the image)");
    }
    say(b", faulting address ");
    say(hex(address, &mut buf));
    say(b"\n");
    // Returning re-runs the instruction with the default action restored
    // (SA_RESETHAND): the process dies of the same signal.
}
