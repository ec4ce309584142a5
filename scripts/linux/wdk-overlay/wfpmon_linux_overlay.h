/*
 * wfpmon Linux build only: bridges the gap between mingw-w64 10's DDK headers
 * (the stand-in for the WDK on Linux) and the WDK that wdk-sys expects.
 *
 * setup.sh copies this file into the generated WDK-shaped directory and the
 * generated cargo configuration force-includes it (`-include`) in every
 * bindgen run of wdk-sys, before wdk-sys' own `#include "ntifs.h"` etc.
 * A Windows build never sees it: the real WDK declares all of this itself.
 *
 * Declarations follow Microsoft's documented prototypes. Exports added here
 * are also added to the generated ntoskrnl.lib by setup.sh.
 */
#ifndef WFPMON_LINUX_OVERLAY_H
#define WFPMON_LINUX_OVERLAY_H

/*
 * mingw defines KeGetCurrentIrql as a FORCEINLINE (CR8 read) on amd64 and
 * bindgen skips inline functions, so `wdk_sys::ntddk::KeGetCurrentIrql` (used
 * by `wdk::paged_code!`) would not exist. Rename mingw's inline definition
 * while its headers are parsed, then declare the real ntoskrnl export.
 */
#define KeGetCurrentIrql wfpmon_mingw_inline_KeGetCurrentIrql
#include <ntifs.h>
#include <ntddk.h>
#undef KeGetCurrentIrql

NTKERNELAPI KIRQL NTAPI KeGetCurrentIrql(VOID);

/*
 * Pool API of Windows 10 2004+ (mingw 10 predates it). wdk-sys defines the
 * POOL_FLAG_* values itself (the WDK's UI64-suffixed macros are invisible to
 * bindgen), so only the types and functions are declared here; defining the
 * macros would create a second, differently typed POOL_FLAG_* in wdk-sys.
 */
typedef ULONG64 POOL_FLAGS;

typedef enum _POOL_EXTENDED_PARAMETER_TYPE {
  PoolExtendedParameterInvalidType = 0,
  PoolExtendedParameterPriority,
  PoolExtendedParameterSecurePool,
  PoolExtendedParameterNumaNode,
  PoolExtendedParameterMax
} POOL_EXTENDED_PARAMETER_TYPE, *PPOOL_EXTENDED_PARAMETER_TYPE;

typedef struct _POOL_EXTENDED_PARAMS_SECURE_POOL {
  HANDLE SecurePoolHandle;
  PVOID Buffer;
  ULONG_PTR Cookie;
  ULONG SecurePoolFlags;
} POOL_EXTENDED_PARAMS_SECURE_POOL;

typedef ULONG POOL_NODE_REQUIREMENT;

typedef struct _POOL_EXTENDED_PARAMETER {
  struct {
    ULONG64 Type : 8;
    ULONG64 Optional : 1;
    ULONG64 Reserved : 55;
  };
  union {
    ULONG64 Reserved2;
    PVOID Reserved3;
    EX_POOL_PRIORITY Priority;
    POOL_EXTENDED_PARAMS_SECURE_POOL *SecurePoolParams;
    POOL_NODE_REQUIREMENT PreferredNode;
  };
} POOL_EXTENDED_PARAMETER, *PPOOL_EXTENDED_PARAMETER;

typedef const POOL_EXTENDED_PARAMETER *PCPOOL_EXTENDED_PARAMETER;

NTKERNELAPI PVOID NTAPI ExAllocatePool2(
  POOL_FLAGS Flags,
  SIZE_T NumberOfBytes,
  ULONG Tag);

NTKERNELAPI PVOID NTAPI ExAllocatePool3(
  POOL_FLAGS Flags,
  SIZE_T NumberOfBytes,
  ULONG Tag,
  PCPOOL_EXTENDED_PARAMETER ExtendedParameters,
  ULONG ExtendedParametersCount);

/*
 * Exported by ntoskrnl and declared by the WDK's ntifs.h, missing from
 * mingw's headers (present in its import library).
 */
NTKERNELAPI NTSTATUS NTAPI ObSetSecurityObjectByPointer(
  PVOID Object,
  SECURITY_INFORMATION SecurityInformation,
  PSECURITY_DESCRIPTOR SecurityDescriptor);

/*
 * On amd64, KeQuerySystemTime is a macro in both the WDK and mingw (it reads
 * KUSER_SHARED_DATA), so it never appears in wdk-sys. The Windows 8+ export
 * KeQuerySystemTimePrecise is the function-shaped alternative; the WDK
 * declares it, mingw 10 does not.
 */
NTKERNELAPI VOID NTAPI KeQuerySystemTimePrecise(
  PLARGE_INTEGER CurrentTime);

#endif /* WFPMON_LINUX_OVERLAY_H */
