//! Owned allocations from the non-paged pool with wfpmon's tag.

use core::ptr::NonNull;

use wdk_sys::{POOL_FLAG_NON_PAGED, SIZE_T, ntddk};
use wfpmon_core::catalog::POOL_TAG;

/// A `T` in non-paged, non-executable pool, tagged `WfpM`; freed on drop.
///
/// Unlike `Box` (whose global allocator is wdk-alloc's, tagged `rust`), this
/// makes flow contexts show up under wfpmon's own tag in pool tracking
/// (`!poolused`, poolmon), and allocation failure is a value, not a panic.
pub struct PoolBox<T> {
    ptr: NonNull<T>,
}

impl<T> PoolBox<T> {
    /// Allocates and moves `value` in. `None` when the pool is exhausted.
    /// IRQL ≤ `DISPATCH_LEVEL`.
    pub fn new(value: T) -> Option<Self> {
        const {
            assert!(
                core::mem::align_of::<T>() <= 16,
                "pool blocks are 16-byte aligned on x64"
            );
        }
        // SAFETY: ExAllocatePool2 may be called at IRQL <= DISPATCH_LEVEL for
        // non-paged pool; POOL_FLAG_NON_PAGED memory is non-executable.
        let raw = unsafe {
            ntddk::ExAllocatePool2(POOL_FLAG_NON_PAGED, size_of::<T>() as SIZE_T, POOL_TAG)
        };
        let ptr = NonNull::new(raw.cast::<T>())?;
        // SAFETY: `ptr` is a fresh, suitably sized and aligned allocation.
        unsafe { ptr.as_ptr().write(value) };
        Some(Self { ptr })
    }

    /// Gives up ownership: the memory must come back through
    /// [`PoolBox::from_raw`] to be freed.
    pub const fn into_raw(self) -> NonNull<T> {
        let ptr = self.ptr;
        core::mem::forget(self);
        ptr
    }

    /// Takes back ownership of memory from [`PoolBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` must come from `into_raw` and not be owned by anyone else.
    pub const unsafe fn from_raw(ptr: NonNull<T>) -> Self {
        Self { ptr }
    }

    /// The address, for handing to the filter engine as a context.
    pub const fn as_non_null(&self) -> NonNull<T> {
        self.ptr
    }
}

impl<T> core::ops::Deref for PoolBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we own a valid, initialised `T` until drop.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: we own the initialised value; it is dropped exactly once.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        // SAFETY: the block came from ExAllocatePool2 with POOL_TAG and is
        // freed once; ExFreePoolWithTag is callable at IRQL <= DISPATCH_LEVEL.
        unsafe { ntddk::ExFreePoolWithTag(self.ptr.as_ptr().cast(), POOL_TAG) };
    }
}
