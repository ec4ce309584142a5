/*
 * wfpmon Linux build only: bridges the gap between mingw-w64 10's DDK headers
 * (the stand-in for the WDK on Linux) and the WDK that wdk-sys expects.
 *
 * setup.sh copies this file into the generated WDK-shaped directory and the
 * generated cargo configuration force-includes it (`-include`) in every
 * bindgen run of wdk-sys, before wdk-sys' own `#include "ntifs.h"` etc.
 * A Windows build never sees it: the real WDK declares all of this itself.
 *
 * The rule: this file declares only what the real WDK headers declare and
 * mingw-w64 lacks (each addition names the WDK header it mirrors), so that
 * nothing compiles here that the real WDK would reject. Declarations follow
 * Microsoft's documented prototypes. Exports added here are also added to
 * the generated ntoskrnl.lib by setup.sh.
 */
#ifndef WFPMON_LINUX_OVERLAY_H
#define WFPMON_LINUX_OVERLAY_H

/*
 * KeGetCurrentIrql (WDK: wdm.h). mingw defines it as a FORCEINLINE (CR8
 * read) on amd64 and bindgen skips such inline functions, so
 * `wdk_sys::ntddk::KeGetCurrentIrql` (used by `wdk::paged_code!`) would not
 * exist; with the real WDK, wdk-sys binds wdm.h's own definition. Rename
 * mingw's inline definition while its headers are parsed, then declare the
 * function with wdm.h's prototype.
 */
#define KeGetCurrentIrql wfpmon_mingw_inline_KeGetCurrentIrql
#include <ntifs.h>
#include <ntddk.h>
#undef KeGetCurrentIrql

NTKERNELAPI KIRQL NTAPI KeGetCurrentIrql(VOID);

/*
 * Pool API of Windows 10 2004+ (WDK: wdm.h; mingw 10 predates it). wdk-sys defines the
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

#endif /* WFPMON_LINUX_OVERLAY_H */
