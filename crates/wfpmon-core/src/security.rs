//! The control device's security descriptor, built as bytes.
//!
//! `IoCreateDeviceSecure` (wdmsec.lib) is a static-library function that
//! wdk-sys does not bind, so the driver does its two steps itself: create
//! the device with `IoCreateDevice`, then apply this descriptor with
//! `ZwSetSecurityObject` on a handle from `ObOpenObjectByPointer`. The descriptor is the self-relative form
//! of SDDL `D:P(A;;FA;;;SY)(A;;FA;;;BA)`: a protected DACL granting all
//! access to `LocalSystem` and to the Administrators alias, and nothing to
//! anyone else. That is `SDDL_DEVOBJ_SYS_ALL_ADM_ALL`,
//! `D:P(A;;GA;;;SY)(A;;GA;;;BA)`, with `GA` already mapped the way it is for
//! file and device objects (`GENERIC_ALL` → `FILE_ALL_ACCESS`, SDDL `FA`), so
//! the result does not depend on a generic mapping being applied.
//!
//! Layouts: `SECURITY_DESCRIPTOR_RELATIVE`, `ACL`, `ACE_HEADER`,
//! `ACCESS_ALLOWED_ACE` and `SID` from winnt.h / ntifs.h.

use crate::wire::Writer;

/// `FILE_ALL_ACCESS` (`STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x1FF`).
pub const FILE_ALL_ACCESS: u32 = 0x001F_01FF;
/// `SE_DACL_PRESENT`.
pub const SE_DACL_PRESENT: u16 = 0x0004;
/// `SE_DACL_PROTECTED` (the `P` of `D:P`: no inherited ACEs).
pub const SE_DACL_PROTECTED: u16 = 0x1000;
/// `SE_SELF_RELATIVE`.
pub const SE_SELF_RELATIVE: u16 = 0x8000;
/// `SECURITY_DESCRIPTOR_REVISION`.
pub const SECURITY_DESCRIPTOR_REVISION: u8 = 1;
/// `ACL_REVISION`.
pub const ACL_REVISION: u8 = 2;
/// `ACCESS_ALLOWED_ACE_TYPE`.
pub const ACCESS_ALLOWED_ACE_TYPE: u8 = 0;
/// `DACL_SECURITY_INFORMATION`: what `ZwSetSecurityObject` applies.
pub const DACL_SECURITY_INFORMATION: u32 = 0x0000_0004;

/// `SECURITY_NT_AUTHORITY` ({0,0,0,0,0,5}).
const NT_AUTHORITY: [u8; 6] = [0, 0, 0, 0, 0, 5];
/// S-1-5-18, `LocalSystem`.
const LOCAL_SYSTEM: (&[u32], [u8; 6]) = (&[18], NT_AUTHORITY);
/// S-1-5-32-544, BUILTIN\Administrators.
const ADMINISTRATORS: (&[u32], [u8; 6]) = (&[32, 544], NT_AUTHORITY);

const HEADER_SIZE: usize = 20;
const ACL_HEADER_SIZE: usize = 8;
const fn sid_size(sub_authorities: usize) -> usize {
    8 + 4 * sub_authorities
}
const fn ace_size(sub_authorities: usize) -> usize {
    8 + sid_size(sub_authorities)
}
const ACL_SIZE: usize = ACL_HEADER_SIZE + ace_size(1) + ace_size(2);

/// Size of the descriptor (72 bytes).
pub const DEVICE_SD_SIZE: usize = HEADER_SIZE + ACL_SIZE;

/// The descriptor bytes. Kept 4-byte aligned for the kernel's readers.
#[repr(C, align(8))]
pub struct SecurityDescriptor(pub [u8; DEVICE_SD_SIZE]);

/// Builds the self-relative descriptor of `D:P(A;;FA;;;SY)(A;;FA;;;BA)`.
#[must_use]
#[allow(clippy::cast_possible_truncation)] // sizes are small constants
pub fn device_security_descriptor() -> SecurityDescriptor {
    let mut out = [0u8; DEVICE_SD_SIZE];
    let mut w = Writer::new(&mut out);
    // SECURITY_DESCRIPTOR_RELATIVE
    w.u8(SECURITY_DESCRIPTOR_REVISION)
        .u8(0)
        .u16(SE_DACL_PRESENT | SE_DACL_PROTECTED | SE_SELF_RELATIVE)
        .u32(0) // Owner: none (set by the object manager)
        .u32(0) // Group: none
        .u32(0) // Sacl: none
        .u32(HEADER_SIZE as u32); // Dacl offset
    // ACL
    w.u8(ACL_REVISION).u8(0).u16(ACL_SIZE as u16).u16(2).u16(0);
    for (subs, authority) in [LOCAL_SYSTEM, ADMINISTRATORS] {
        // ACCESS_ALLOWED_ACE: ACE_HEADER, Mask, SID
        w.u8(ACCESS_ALLOWED_ACE_TYPE)
            .u8(0)
            .u16(ace_size(subs.len()) as u16);
        w.u32(FILE_ALL_ACCESS);
        w.u8(1).u8(subs.len() as u8).bytes(&authority);
        for &s in subs {
            w.u32(s);
        }
    }
    debug_assert_eq!(w.position(), DEVICE_SD_SIZE);
    SecurityDescriptor(out)
}
