//! The socket-address types nested in
//! [`crate::FWPS_INCOMING_METADATA_VALUES0`]: `SCOPE_ID` and
//! `IP_ADDRESS_PREFIX` with the `SOCKADDR_INET` it contains.
//!
//! Sources: `inaddr.h` (`IN_ADDR`), `in6addr.h` (`IN6_ADDR`), `ws2def.h`
//! (`SCOPE_ID`, `SOCKADDR_IN`), `ws2ipdef.h` (`SOCKADDR_IN6`,
//! `SOCKADDR_INET`) and `netioapi.h` (`IP_ADDRESS_PREFIX`), as documented on
//! the Windows SDK reference pages of the same names.

use crate::types::{ADDRESS_FAMILY, UCHAR, UINT8, ULONG, USHORT};

/// The union inside [`IN_ADDR`] (inaddr.h, member `S_un`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union IN_ADDR_0 {
    /// `S_un_b`: the four bytes, network order (`s_b1` .. `s_b4`).
    pub S_un_b: [UCHAR; 4],
    /// `S_un_w`: two 16-bit words (`s_w1`, `s_w2`).
    pub S_un_w: [USHORT; 2],
    /// `S_addr`: the address as one `ULONG` in network byte order.
    pub S_addr: ULONG,
}

/// `IN_ADDR` (inaddr.h): an IPv4 address, network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IN_ADDR {
    /// The address.
    pub S_un: IN_ADDR_0,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<IN_ADDR_0>() == 4);
    assert!(size_of::<IN_ADDR>() == 4);
    assert!(align_of::<IN_ADDR>() == 4);
    assert!(offset_of!(IN_ADDR, S_un) == 0);
};

/// The union inside [`IN6_ADDR`] (in6addr.h, member `u`).
#[repr(C)]
#[derive(Clone, Copy)]
pub union IN6_ADDR_0 {
    /// `Byte`: the 16 bytes, network order.
    pub Byte: [UCHAR; 16],
    /// `Word`: eight 16-bit words.
    pub Word: [USHORT; 8],
}

/// `IN6_ADDR` (in6addr.h): an IPv6 address, network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IN6_ADDR {
    /// The address.
    pub u: IN6_ADDR_0,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<IN6_ADDR_0>() == 16);
    assert!(size_of::<IN6_ADDR>() == 16);
    assert!(align_of::<IN6_ADDR>() == 2);
    assert!(offset_of!(IN6_ADDR, u) == 0);
};

/// `SCOPE_ID` (ws2def.h): `union { struct { ULONG Zone : 28; ULONG Level :
/// 4; }; ULONG Value; }`.
///
/// The bit fields are not declared (Rust has none);
/// [`SCOPE_ID::Zone`] and [`SCOPE_ID::Level`] extract them from `Value`
/// (MSVC allocates bit fields from the least significant bit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SCOPE_ID {
    /// The whole 32-bit scope identifier.
    pub Value: ULONG,
}

impl SCOPE_ID {
    /// The `Zone` bit field: bits 0..28 of `Value`.
    #[must_use]
    pub const fn Zone(&self) -> ULONG {
        self.Value & 0x0fff_ffff
    }

    /// The `Level` bit field: bits 28..32 of `Value`.
    #[must_use]
    pub const fn Level(&self) -> ULONG {
        self.Value >> 28
    }
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<SCOPE_ID>() == 4);
    assert!(align_of::<SCOPE_ID>() == 4);
    assert!(offset_of!(SCOPE_ID, Value) == 0);
};

/// `SOCKADDR_IN` (ws2def.h): IPv4 socket address.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SOCKADDR_IN {
    /// `AF_INET`.
    pub sin_family: ADDRESS_FAMILY,
    /// Port, network byte order.
    pub sin_port: USHORT,
    /// Address.
    pub sin_addr: IN_ADDR,
    /// Zero padding (`CHAR sin_zero[8]`).
    pub sin_zero: [i8; 8],
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<SOCKADDR_IN>() == 16);
    assert!(align_of::<SOCKADDR_IN>() == 4);
    assert!(offset_of!(SOCKADDR_IN, sin_family) == 0);
    assert!(offset_of!(SOCKADDR_IN, sin_port) == 2);
    assert!(offset_of!(SOCKADDR_IN, sin_addr) == 4);
    assert!(offset_of!(SOCKADDR_IN, sin_zero) == 8);
};

/// The scope union of [`SOCKADDR_IN6`] (ws2ipdef.h).
#[repr(C)]
#[derive(Clone, Copy)]
pub union SOCKADDR_IN6_0 {
    /// `sin6_scope_id`.
    pub sin6_scope_id: ULONG,
    /// `sin6_scope_struct`.
    pub sin6_scope_struct: SCOPE_ID,
}

/// `SOCKADDR_IN6` (ws2ipdef.h, `SOCKADDR_IN6_LH`): IPv6 socket address.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SOCKADDR_IN6 {
    /// `AF_INET6`.
    pub sin6_family: ADDRESS_FAMILY,
    /// Port, network byte order.
    pub sin6_port: USHORT,
    /// Flow information.
    pub sin6_flowinfo: ULONG,
    /// Address.
    pub sin6_addr: IN6_ADDR,
    /// Scope (`sin6_scope_id` / `sin6_scope_struct`).
    pub Anonymous: SOCKADDR_IN6_0,
}

// family @0, port @2, flowinfo @4, addr (16, 2-aligned) @8, scope @24 => 28.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<SOCKADDR_IN6_0>() == 4);
    assert!(size_of::<SOCKADDR_IN6>() == 28);
    assert!(align_of::<SOCKADDR_IN6>() == 4);
    assert!(offset_of!(SOCKADDR_IN6, sin6_family) == 0);
    assert!(offset_of!(SOCKADDR_IN6, sin6_port) == 2);
    assert!(offset_of!(SOCKADDR_IN6, sin6_flowinfo) == 4);
    assert!(offset_of!(SOCKADDR_IN6, sin6_addr) == 8);
    assert!(offset_of!(SOCKADDR_IN6, Anonymous) == 24);
};

/// `SOCKADDR_INET` (ws2ipdef.h): an IPv4 or IPv6 socket address; read
/// `si_family` first.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SOCKADDR_INET {
    /// Valid when `si_family` is `AF_INET`.
    pub Ipv4: SOCKADDR_IN,
    /// Valid when `si_family` is `AF_INET6`.
    pub Ipv6: SOCKADDR_IN6,
    /// The address family, shared by both members.
    pub si_family: ADDRESS_FAMILY,
}

#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<SOCKADDR_INET>() == 28);
    assert!(align_of::<SOCKADDR_INET>() == 4);
};

/// `IP_ADDRESS_PREFIX` (netioapi.h): an address and a prefix length.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IP_ADDRESS_PREFIX {
    /// The prefix.
    pub Prefix: SOCKADDR_INET,
    /// Prefix length in bits.
    pub PrefixLength: UINT8,
}

// Prefix (28) @0, PrefixLength @28, padded to the 4-byte alignment => 32.
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<IP_ADDRESS_PREFIX>() == 32);
    assert!(align_of::<IP_ADDRESS_PREFIX>() == 4);
    assert!(offset_of!(IP_ADDRESS_PREFIX, Prefix) == 0);
    assert!(offset_of!(IP_ADDRESS_PREFIX, PrefixLength) == 28);
};
