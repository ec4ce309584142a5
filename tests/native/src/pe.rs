//! A PE32+ loader for one kernel image, on the `object` crate.
//!
//! Steps: map `SizeOfImage` bytes anywhere, copy the headers and each
//! section to its RVA, apply the base relocations (`IMAGE_REL_BASED_DIR64`;
//! the image is linked for `0x180000000`), fill the import address table
//! from [`crate::imports`] (an import nobody models is a hard error that
//! names it), rewrite the `KUSER_SHARED_DATA.InterruptTime` immediates to
//! the host page of [`crate::clock`], refuse instructions only a kernel can
//! run (`gs:`/`fs:` segment overrides, control registers, other absolute
//! kernel addresses), and finally `mprotect` each section as its
//! characteristics say (code read+execute, data read+write, the rest
//! read-only).

use std::ops::Range;

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, OpKind, Register};
use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};

use crate::clock;
use crate::imports::{self, Resolved};

/// A loaded image. Unmapped when dropped.
pub struct Image {
    base: usize,
    size: usize,
    entry: usize,
    code: Vec<Range<usize>>,
    /// Sections: name, address range, characteristics.
    pub sections: Vec<(String, Range<usize>, u32)>,
    /// Imports resolved: (dll, name).
    pub imports: Vec<(String, String)>,
    /// Offsets (from the image base) of the patched interrupt-time reads.
    pub interrupt_time_sites: Vec<usize>,
}

// SAFETY: the mapping is plain memory owned by this value; the raw address
// is only an integer here.
unsafe impl Send for Image {}
// SAFETY: as above: no interior state besides the mapping.
unsafe impl Sync for Image {}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Image {
    /// Loads the image file at `path`.
    ///
    /// # Errors
    /// A readable description of what is wrong with the file, an import
    /// that is not modelled, or an instruction the host cannot run.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file = PeFile64::parse(&*data).map_err(err("not a PE32+ image"))?;
        let nt = file.nt_headers();
        let machine = nt.file_header().machine.get(LE);
        if machine != pe::IMAGE_FILE_MACHINE_AMD64 {
            return Err(format!("machine {machine:#x} is not AMD64"));
        }
        let opt = nt.optional_header();
        let size = opt.size_of_image() as usize;
        let headers = opt.size_of_headers() as usize;
        let linked_base = opt.image_base();
        // SAFETY: a fresh anonymous mapping; nothing else is affected.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(format!("mmap of {size} bytes failed"));
        }
        let mut image = Self {
            base: map as usize,
            size,
            entry: 0,
            code: Vec::new(),
            sections: Vec::new(),
            imports: Vec::new(),
            interrupt_time_sites: Vec::new(),
        };
        image.write(0, &data[..headers.min(data.len())])?;
        let table = file.section_table();
        for s in table.iter() {
            let name = String::from_utf8_lossy(s.raw_name())
                .trim_end_matches('\0')
                .to_string();
            let va = s.virtual_address.get(LE) as usize;
            let vsize = (s.virtual_size.get(LE) as usize).max(s.size_of_raw_data.get(LE) as usize);
            let raw = s.pe_data(&*data).map_err(err("section data"))?;
            let copied = raw
                .len()
                .min(s.virtual_size.get(LE).max(1) as usize)
                .min(raw.len());
            image.write(va, &raw[..copied])?;
            let characteristics = s.characteristics.get(LE);
            let range = image.base + va..image.base + va + vsize;
            if characteristics & pe::IMAGE_SCN_MEM_EXECUTE != 0 {
                image.code.push(range.clone());
            }
            image.sections.push((name, range, characteristics));
        }
        image.relocate(&file, &data, linked_base)?;
        image.resolve_imports(&file)?;
        image.patch_and_scan()?;
        image.protect()?;
        image.entry = image.base + opt.address_of_entry_point() as usize;
        if !image.is_code(image.entry) {
            return Err("the entry point is not in an executable section".into());
        }
        Ok(image)
    }

    /// Base address of the mapping.
    #[must_use]
    pub const fn base(&self) -> usize {
        self.base
    }

    /// Bytes mapped.
    #[must_use]
    pub const fn size(&self) -> usize {
        self.size
    }

    /// `DriverEntry` (the PE entry point; wdk-build links with
    /// `/ENTRY:DriverEntry`).
    #[must_use]
    pub const fn entry(&self) -> usize {
        self.entry
    }

    /// Whether `addr` lies in an executable section.
    #[must_use]
    pub fn is_code(&self, addr: usize) -> bool {
        self.code.iter().any(|r| r.contains(&addr))
    }

    /// Whether `addr` lies in the image.
    #[must_use]
    pub const fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.base + self.size
    }

    /// Offset of `addr` in the image (for mapping faults to the map file).
    #[must_use]
    pub const fn offset_of(&self, addr: usize) -> Option<usize> {
        if self.contains(addr) {
            Some(addr - self.base)
        } else {
            None
        }
    }

    fn write(&self, rva: usize, bytes: &[u8]) -> Result<(), String> {
        if rva
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.size)
        {
            return Err(format!(
                "write of {} bytes at RVA {rva:#x} leaves the image",
                bytes.len()
            ));
        }
        // SAFETY: bounds checked above; the mapping is writable until
        // `protect` and nobody runs it yet.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (self.base + rva) as *mut u8,
                bytes.len(),
            );
        };
        Ok(())
    }

    fn read_u64(&self, rva: usize) -> Result<u64, String> {
        if rva.checked_add(8).is_none_or(|end| end > self.size) {
            return Err(format!("read at RVA {rva:#x} leaves the image"));
        }
        // SAFETY: bounds checked above; the mapping is readable.
        Ok(unsafe { std::ptr::read_unaligned((self.base + rva) as *const u64) })
    }

    fn relocate(&self, file: &PeFile64<'_>, data: &[u8], linked_base: u64) -> Result<(), String> {
        let delta = (self.base as u64).wrapping_sub(linked_base);
        let Some(mut blocks) = file
            .data_directories()
            .relocation_blocks(data, &file.section_table())
            .map_err(err("relocations"))?
        else {
            return Err("the image has no base relocations: it cannot be moved".into());
        };
        while let Some(block) = blocks.next().map_err(err("relocation block"))? {
            for r in block {
                match r.typ {
                    pe::IMAGE_REL_BASED_ABSOLUTE => {}
                    pe::IMAGE_REL_BASED_DIR64 => {
                        let rva = r.virtual_address as usize;
                        let value = self.read_u64(rva)?.wrapping_add(delta);
                        self.write(rva, &value.to_le_bytes())?;
                    }
                    other => {
                        return Err(format!(
                            "unsupported relocation type {other} at RVA {:#x}",
                            r.virtual_address
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn resolve_imports(&mut self, file: &PeFile64<'_>) -> Result<(), String> {
        let Some(table) = file.import_table().map_err(err("import table"))? else {
            return Ok(());
        };
        let mut descriptors = table.descriptors().map_err(err("import descriptors"))?;
        let mut missing = Vec::new();
        while let Some(d) = descriptors.next().map_err(err("import descriptor"))? {
            let dll = String::from_utf8_lossy(table.name(d.name.get(LE)).map_err(err("dll name"))?)
                .to_string();
            let lookup = match d.original_first_thunk.get(LE) {
                0 => d.first_thunk.get(LE),
                rva => rva,
            };
            let mut thunks = table.thunks(lookup).map_err(err("import thunks"))?;
            let iat = d.first_thunk.get(LE) as usize;
            let mut index = 0usize;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .map_err(err("thunk"))?
            {
                let name = match table
                    .import::<pe::ImageNtHeaders64>(thunk)
                    .map_err(err("import"))?
                {
                    object::read::pe::Import::Name(_, name) => {
                        String::from_utf8_lossy(name).to_string()
                    }
                    object::read::pe::Import::Ordinal(n) => format!("#{n}"),
                };
                match imports::resolve(&dll, &name) {
                    Some(Resolved::Function(addr) | Resolved::Data(addr)) => {
                        self.write(iat + 8 * index, &(addr as u64).to_le_bytes())?;
                    }
                    None => missing.push(format!("{dll}!{name}")),
                }
                self.imports.push((dll.clone(), name));
                index += 1;
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the image imports functions the native host does not model: {} (add them to tests/native/src/imports.rs)",
                missing.join(", ")
            ))
        }
    }

    /// Rewrites reads of `KUSER_SHARED_DATA` and refuses other kernel-only
    /// code: linear disassembly of every executable section.
    fn patch_and_scan(&mut self) -> Result<(), String> {
        let page = clock::shared_page() as u64;
        let mut problems = Vec::new();
        let code = self.code.clone();
        for range in code {
            let len = range.end - range.start;
            // SAFETY: the section lies inside the mapping (checked when it
            // was copied); read-only view while nothing else writes it.
            let bytes =
                unsafe { std::slice::from_raw_parts(range.start as *const u8, len) }.to_vec();
            let section = range.start - self.base;
            let scan = scan_code(&bytes);
            for site in scan.interrupt_time_sites {
                let target = page + clock::INTERRUPT_TIME_OFFSET as u64;
                self.write(section + site.field, &target.to_le_bytes())?;
                self.interrupt_time_sites.push(section + site.instruction);
            }
            problems.extend(
                scan.problems
                    .into_iter()
                    .map(|(at, what)| format!("{:#x}: {what}", section + at)),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the image contains code the native host cannot run:\n  {}",
                problems.join("\n  ")
            ))
        }
    }

    fn protect(&self) -> Result<(), String> {
        for (name, range, characteristics) in &self.sections {
            let mut prot = libc::PROT_READ;
            if characteristics & pe::IMAGE_SCN_MEM_WRITE != 0 {
                prot |= libc::PROT_WRITE;
            }
            if characteristics & pe::IMAGE_SCN_MEM_EXECUTE != 0 {
                prot |= libc::PROT_EXEC;
            }
            let start = range.start & !0xFFF;
            let len = ((range.end + 0xFFF) & !0xFFF) - start;
            // SAFETY: a page range inside our own mapping.
            let rc = unsafe { libc::mprotect(start as *mut libc::c_void, len, prot) };
            if rc != 0 {
                return Err(format!("mprotect of section {name} failed"));
            }
        }
        // Headers: read-only.
        // SAFETY: the first page of our own mapping.
        let rc = unsafe { libc::mprotect(self.base as *mut libc::c_void, 0x1000, libc::PROT_READ) };
        if rc == 0 {
            Ok(())
        } else {
            Err("mprotect of the headers failed".into())
        }
    }
}

/// A read of `KUSER_SHARED_DATA.InterruptTime` found by [`scan_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptTimeSite {
    /// Offset of the instruction.
    pub instruction: usize,
    /// Offset of its 8-byte address field (the one to rewrite).
    pub field: usize,
}

/// What [`scan_code`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// `movabs r64, imm64` / `mov rax, [moffs64]` reads of InterruptTime.
    pub interrupt_time_sites: Vec<InterruptTimeSite>,
    /// (offset, description) of code a user process cannot run.
    pub problems: Vec<(usize, String)>,
}

/// Linear disassembly of x64 code (offsets relative to its start): finds
/// the interrupt-time reads the loader rewrites, and everything only a
/// kernel can run — `gs:`/`fs:` (per-processor data), control and debug
/// registers (`cr8` is the IRQL), and absolute kernel addresses (8-byte
/// immediates or displacements, or absolute 32-bit ones, at or above
/// 0xFFFF800000000000) other than InterruptTime.
#[must_use]
pub fn scan_code(bytes: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut decoder = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        let at = usize::try_from(instr.ip()).unwrap_or(usize::MAX);
        if instr.is_invalid() {
            continue; // padding or data between functions
        }
        if matches!(instr.segment_prefix(), Register::GS | Register::FS)
            || matches!(instr.memory_segment(), Register::GS | Register::FS)
        {
            scan.problems.push((
                at,
                format!(
                    "{:?} uses a gs:/fs: segment (per-processor kernel data)",
                    instr.code()
                ),
            ));
            continue;
        }
        if (0..instr.op_count()).any(|i| {
            let name = format!("{:?}", instr.op_register(i));
            name.starts_with("CR") || name.starts_with("DR")
        }) {
            scan.problems.push((
                at,
                format!("{:?} accesses a control/debug register", instr.code()),
            ));
            continue;
        }
        let offsets = decoder.get_constant_offsets(&instr);
        let movabs = instr.code() == Code::Mov_r64_imm64;
        let moffs = matches!(instr.code(), Code::Mov_RAX_moffs64 | Code::Mov_moffs64_RAX);
        let absolute_memory = (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Memory)
            && instr.memory_base() == Register::None
            && instr.memory_index() == Register::None;
        let mut values = Vec::new();
        if movabs {
            values.push((instr.immediate64(), offsets.immediate_offset(), "immediate"));
        }
        if absolute_memory && !instr.is_ip_rel_memory_operand() {
            values.push((
                instr.memory_displacement64(),
                offsets.displacement_offset(),
                "address",
            ));
        }
        for (value, field, what) in values {
            if value < 0xFFFF_8000_0000_0000 {
                continue;
            }
            let kuser = (clock::KERNEL_USER_SHARED_DATA..clock::KERNEL_USER_SHARED_DATA + 0x1000)
                .contains(&value);
            let eight_bytes = if movabs {
                offsets.immediate_size() == 8
            } else {
                offsets.displacement_size() == 8
            };
            if value == clock::KERNEL_INTERRUPT_TIME && (movabs || moffs) && eight_bytes {
                scan.interrupt_time_sites.push(InterruptTimeSite {
                    instruction: at,
                    field: at + field,
                });
            } else if kuser {
                scan.problems.push((
                    at,
                    format!(
                        "reads KUSER_SHARED_DATA+{:#x} ({what}); only InterruptTime is modelled",
                        value - clock::KERNEL_USER_SHARED_DATA
                    ),
                ));
            } else {
                scan.problems.push((
                    at,
                    format!(
                        "absolute kernel address {value:#x} ({what}) in {:?}",
                        instr.code()
                    ),
                ));
            }
        }
    }
    scan
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; any later execution of
        // the image faults (which is the point: nothing may run it after
        // unload).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(bytes: &[u8]) -> usize {
        scan_code(bytes).problems.len()
    }

    #[test]
    fn interrupt_time_reads_are_found_in_both_encodings() {
        // movabs rax, 0xFFFFF78000000008; mov rax, [rax]
        let movabs = [
            0x48, 0xB8, 0x08, 0, 0, 0, 0x80, 0xF7, 0xFF, 0xFF, 0x48, 0x8B, 0x00,
        ];
        let scan = scan_code(&movabs);
        assert_eq!(
            scan.interrupt_time_sites,
            vec![InterruptTimeSite {
                instruction: 0,
                field: 2
            }]
        );
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
        // mov rax, [0xFFFFF78000000008] (moffs64)
        let moffs = [0x48, 0xA1, 0x08, 0, 0, 0, 0x80, 0xF7, 0xFF, 0xFF];
        let scan = scan_code(&moffs);
        assert_eq!(
            scan.interrupt_time_sites,
            vec![InterruptTimeSite {
                instruction: 0,
                field: 2
            }]
        );
    }

    #[test]
    fn kernel_only_code_is_refused() {
        // mov rax, gs:[0x188] (the current thread)
        assert_eq!(
            problems(&[0x65, 0x48, 0x8B, 0x04, 0x25, 0x88, 0x01, 0, 0]),
            1
        );
        // mov rax, cr8 (the IRQL)
        assert_eq!(problems(&[0x44, 0x0F, 0x20, 0xC0]), 1);
        // movabs rax, KUSER_SHARED_DATA+0x14 (SystemTime): not modelled
        assert_eq!(
            problems(&[0x48, 0xB8, 0x14, 0, 0, 0, 0x80, 0xF7, 0xFF, 0xFF]),
            1
        );
        // movabs rax, 0xFFFF800000000000
        assert_eq!(problems(&[0x48, 0xB8, 0, 0, 0, 0, 0, 0x80, 0xFF, 0xFF]), 1);
        // mov eax, [0xFFFFFFFFFFFFFF00] (absolute, sign-extended 32-bit)
        assert_eq!(problems(&[0x8B, 0x04, 0x25, 0x00, 0xFF, 0xFF, 0xFF]), 1);
    }

    #[test]
    fn ordinary_code_passes() {
        // mov rax, -1; and rsp, -16; mov rax, [rip+0x10]; movabs rax, 0x180000000; ret
        let code = [
            0x48, 0xC7, 0xC0, 0xFF, 0xFF, 0xFF, 0xFF, 0x48, 0x83, 0xE4, 0xF0, 0x48, 0x8B, 0x05,
            0x10, 0, 0, 0, 0x48, 0xB8, 0, 0, 0, 0x80, 0x01, 0, 0, 0, 0xC3,
        ];
        let scan = scan_code(&code);
        assert!(
            scan.problems.is_empty() && scan.interrupt_time_sites.is_empty(),
            "{scan:?}"
        );
    }
}
