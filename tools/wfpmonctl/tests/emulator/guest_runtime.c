/*
 * Guest code that stands in for the process heap and the C runtime's
 * memory functions when test_wfpmonctl_top_emulated.py runs wfpmonctl.exe
 * in Speakeasy. Every imported call leaves the emulated CPU for a Python
 * handler (about a millisecond each); one frame of `top` makes thousands
 * of them (a memcmp per cell compared, an allocation per string), so a
 * session of keys would take many minutes. These run inside the guest:
 *
 * - HeapAlloc: a bump allocator over a region the harness maps (fresh,
 *   zeroed memory, never reused, so HEAP_ZERO_MEMORY holds); the block's
 *   size is kept in the 16 bytes before it, blocks are 16-byte aligned;
 *   NULL when the region is exhausted, as HeapAlloc without
 *   HEAP_GENERATE_EXCEPTIONS fails;
 * - HeapFree: nothing to release (TRUE); HeapReAlloc: a new block with
 *   the old contents; GetProcessHeap: a constant handle;
 * - memcpy, memmove, memset, memcmp: their C-standard behaviour;
 * - TlsAlloc, TlsGetValue, TlsSetValue, TlsFree: the slots of the one
 *   emulated thread (the emulation runs every callback on it; the lookup
 *   work items touch no thread-local state), TLS_OUT_OF_INDEXES when all
 *   1088 are taken (a freed index is not given out again); unlike
 *   Windows, TlsGetValue leaves the last error alone (Speakeasy keeps it
 *   outside the guest; see guest_runtime.py);
 *
 * Position-independent (the state lives in .text, reached RIP-relative):
 * the harness compiles it with the mingw-w64 compiler, copies .text into
 * the emulator and points the image's import slots at these functions.
 * Written for these tests; no code is taken from elsewhere.
 */
typedef unsigned long long u64;
typedef unsigned char u8;

/* The next free byte and the end of the region; set by the harness. */
static u64 state[2] __attribute__((section(".text"), used));
/* TLS slots (TLS_MINIMUM_AVAILABLE + TLS_EXPANSION_SLOTS) and the next index. */
#define TLS_SLOTS 1088
static u64 tls[TLS_SLOTS] __attribute__((section(".text"), used));
static u64 tls_next __attribute__((section(".text"), used));

void *rt_heap_alloc(void *heap, unsigned flags, u64 n) {
    (void)heap;
    (void)flags;
    u64 p = (state[0] + 15) & ~15ULL;
    u64 end = p + 16 + ((n + 15) & ~15ULL);
    if (end > state[1] || end < p) return 0;
    state[0] = end;
    *(u64 *)p = n;
    return (void *)(p + 16);
}

int rt_heap_free(void *heap, unsigned flags, void *p) {
    (void)heap;
    (void)flags;
    (void)p;
    return 1;
}

void *rt_get_process_heap(void) { return (void *)0x5EAB0000ULL; }

void *rt_memcpy(void *d, const void *s, u64 n) {
    void *r = d;
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return r;
}

void *rt_memmove(void *d, const void *s, u64 n) {
    u8 *dd = d;
    const u8 *ss = s;
    if (dd <= ss || dd >= ss + n) return rt_memcpy(d, s, n);
    while (n) {
        n--;
        dd[n] = ss[n];
    }
    return d;
}

void *rt_memset(void *d, int c, u64 n) {
    void *r = d;
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return r;
}

int rt_memcmp(const void *a, const void *b, u64 n) {
    const u8 *x = a, *y = b;
    for (u64 i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

void *rt_heap_realloc(void *heap, unsigned flags, void *p, u64 n) {
    void *q = rt_heap_alloc(heap, flags, n);
    if (!q) return 0;
    u64 old = ((u64 *)p)[-2];
    rt_memcpy(q, p, old < n ? old : n);
    return q;
}

unsigned rt_tls_alloc(void) {
    if (tls_next >= TLS_SLOTS) return 0xFFFFFFFFu; /* TLS_OUT_OF_INDEXES */
    tls[tls_next] = 0;
    return (unsigned)tls_next++;
}

void *rt_tls_get_value(unsigned index) {
    return index < TLS_SLOTS ? (void *)tls[index] : 0;
}

int rt_tls_set_value(unsigned index, void *value) {
    if (index >= TLS_SLOTS) return 0;
    tls[index] = (u64)value;
    return 1;
}

int rt_tls_free(unsigned index) { return index < tls_next; }
