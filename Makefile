# Driven by build.sh, which fetches the BearSSL and cJSON sources into .deps/.
# Five builds of the same sources:
#   $(B)/musl   the product: static, stripped, size-optimised (./lambdo) and musl test tools
#   $(B)/glibc  plain -O1 -g, for valgrind memcheck
#   $(B)/asan   AddressSanitizer + UBSan (clang), what the tests run by default
#   $(B)/fuzz   libFuzzer targets (clang)
#   $(B)/tsan   ThreadSanitizer (clang), lambdo only, cJSON instrumented too; clang 14's
#               runtime needs `setarch $(uname -m) -R` on kernels with high-entropy ASLR
# Every top-level *.c but lambdo.c and alloc.c is library code; alloc.c, a malloc, is linked
# into the musl builds only (the sanitizers and valgrind replace malloc themselves, and
# tests/t_alloc.c includes it under other names); tests/t_*.c are cmocka unit tests,
# tests/tool_*.c are small CLIs the Node tests drive, tests/fuzz_*.c are fuzz targets.

B       ?= build
BEARSSL ?= .deps/bearssl
CJSON   ?= .deps/cjson
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

LIBSRC  ?= $(filter-out lambdo.c alloc.c,$(wildcard *.c))
UNITS   := $(patsubst tests/%.c,%,$(wildcard tests/t_*.c))
TOOLS   := $(patsubst tests/%.c,%,$(wildcard tests/tool_*.c))
FUZZERS := $(patsubst tests/%.c,%,$(wildcard tests/fuzz_*.c))
BR_SRC  := $(shell find $(BEARSSL)/src -name '*.c' 2>/dev/null)

WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter
INC     := -I. -I$(BEARSSL)/inc -I$(CJSON)
DEPVERS := $(shell cat $(dir $(BEARSSL))bearssl.version 2>/dev/null || echo unknown)
DEFS    := -D_GNU_SOURCE -DLAMBDO_VERSION='"$(VERSION)"' -DLAMBDO_BEARSSL_VERSION='"$(DEPVERS)"'

MUSL_CC := musl-gcc
# -fno-pie: the static binary is linked at a fixed address anyway (ELF type EXEC, no
# ASLR for its code), so position-independent code only cost GOT-relative addressing and
# put every constant table holding a pointer (BearSSL's vtables among them) in
# .data.rel.ro, whose RELRO page alignment padded the file: -4 KB, and those tables now
# sit in .rodata, read-only from the start instead of after start-up.
MUSL_CF := -std=c11 -Os -ffunction-sections -fdata-sections -fno-asynchronous-unwind-tables \
           -fno-stack-protector -D_FORTIFY_SOURCE=0 -fno-pie
# lambdo's own code and cJSON: -Oz with link-time optimisation (the link runs at -Oz too, in
# one partition), so a function used once is inlined across files and dead code goes: 5.4 KB
# less than -Os, and the callgrind guard's steady state 0.6 % lower (87.8 M instead of
# 88.3 M per 1000 events at fe9c9d6). BearSSL stays out of it: built with -flto too, its MD5
# gave wrong sums (every MD5OfBody check failed). tests/run runs the daemon's integration
# tests against this build as well, since the other builds are not link-time optimised.
MUSL_OWN := -Oz -flto
# -z noseparate-code: one read-only segment for code and constants instead of two, each
# padded to a 4 KiB page in the file (-8 KB). The price: constants are mapped executable
# too, a few more bytes an exploit could borrow as gadgets; accepted for a 3 % smaller binary.
# -z norelro: a static musl binary has no loader to make the RELRO range read-only after
# start-up (/proc/PID/maps shows it rw-p with or without it), so the page alignment that
# RELRO asks for only padded the file (up to 4 KB).
# -z common-page-size=16: the data segment starts in the file right after the code, on the
# same file page (mapped twice: read+execute for the code, private read+write for the data,
# each at its own address), instead of at the next 4 KiB page boundary: the padding the
# file carried before it (0 to 4 KB, 1,840 bytes at 966fa66) is gone. max-page-size keeps
# the segments' alignment at 4 KiB, which is what the kernel maps by.
MUSL_LD := -static -s -Wl,--gc-sections -Wl,--build-id=none -Wl,-z,noseparate-code -Wl,-z,norelro \
           -Wl,-z,max-page-size=4096 -Wl,-z,common-page-size=16
GLIBC_CC := gcc
GLIBC_CF := -std=c11 -O1 -g
ASAN_CC := clang
ASAN_CF := -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined
TSAN_CF := -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=thread
FUZZ_CF := -std=c11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined

.PHONY: lambdo test-build clean
.SUFFIXES:

lambdo: $(B)/musl/lambdo
	@cp $< lambdo

test-build: $(B)/asan/lambdo $(B)/glibc/lambdo $(UNITS:%=$(B)/asan/%) $(UNITS:%=$(B)/glibc/%) \
            $(TOOLS:%=$(B)/asan/%) $(TOOLS:%=$(B)/glibc/%) $(TOOLS:%=$(B)/musl/%) \
            $(FUZZERS:%=$(B)/fuzz/%) $(B)/tsan/lambdo

# --- third-party libraries, one archive per C library flavour ---------------------------
br_obj = $(patsubst $(BEARSSL)/src/%.c,$(B)/$(1)/bearssl/%.o,$(BR_SRC))

$(B)/musl/bearssl/%.o: $(BEARSSL)/src/%.c
	@mkdir -p $(@D)
	$(MUSL_CC) $(MUSL_CF) -I$(BEARSSL)/inc -I$(BEARSSL)/src -c $< -o $@
$(B)/glibc/bearssl/%.o: $(BEARSSL)/src/%.c
	@mkdir -p $(@D)
	$(GLIBC_CC) -O2 -g -I$(BEARSSL)/inc -I$(BEARSSL)/src -c $< -o $@
# -O3 where lambdo's steady-state CPU goes: SHA-256 (SigV4 hashes every request; -1.6 %
# instructions per event) and BearSSL's constant-time copy (the elliptic-curve code's table
# lookups: measured -6 % per handshake with the P-256-only code tls.c no longer links), 1 KB
# together. The curve code itself stays -Os: a handshake happens once per keep-alive
# connection, not per event (see tls.c's tls_ec).
BR_HOT  := codec/ccopy hash/sha2small
$(BR_HOT:%=$(B)/musl/bearssl/%.o): MUSL_CF += -O3
$(BR_HOT:%=$(B)/musl/bearssl/%.o): Makefile
$(B)/musl/libbearssl.a: $(call br_obj,musl)
	@rm -f $@; ar rcs $@ $^
$(B)/glibc/libbearssl.a: $(call br_obj,glibc)
	@rm -f $@; ar rcs $@ $^
$(B)/musl/cjson.o: $(CJSON)/cJSON.c
	@mkdir -p $(@D)
	$(MUSL_CC) $(MUSL_CF) $(MUSL_OWN) -c $< -o $@
$(B)/glibc/cjson.o: $(CJSON)/cJSON.c
	@mkdir -p $(@D)
	$(GLIBC_CC) -O2 -g -c $< -o $@

$(B)/tsan/cjson.o: $(CJSON)/cJSON.c
	@mkdir -p $(@D)
	$(ASAN_CC) $(TSAN_CF) -c $< -o $@

MUSL_DEPS  := $(B)/musl/libbearssl.a $(B)/musl/cjson.o $(B)/musl/alloc.o
GLIBC_DEPS := $(B)/glibc/libbearssl.a $(B)/glibc/cjson.o

# --- our code -----------------------------------------------------------------------------
$(B)/musl/%.o: %.c
	@mkdir -p $(@D)
	$(MUSL_CC) $(MUSL_CF) $(MUSL_OWN) $(WARN) $(INC) $(DEFS) -MMD -c $< -o $@
# Not link-time optimised, and -fno-builtin: gcc must not turn calloc's malloc and memset
# into a call to calloc, nor reason about its free as the C library's (see alloc.c).
$(B)/musl/alloc.o: MUSL_OWN := -fno-builtin
$(B)/musl/alloc.o: Makefile
$(B)/glibc/%.o: %.c
	@mkdir -p $(@D)
	$(GLIBC_CC) $(GLIBC_CF) $(WARN) $(INC) $(DEFS) -MMD -c $< -o $@
$(B)/asan/%.o: %.c
	@mkdir -p $(@D)
	$(ASAN_CC) $(ASAN_CF) $(WARN) $(INC) $(DEFS) -MMD -c $< -o $@
$(B)/fuzz/%.o: %.c
	@mkdir -p $(@D)
	$(ASAN_CC) $(FUZZ_CF) $(WARN) $(INC) $(DEFS) -MMD -c $< -o $@
$(B)/tsan/%.o: %.c
	@mkdir -p $(@D)
	$(ASAN_CC) $(TSAN_CF) $(WARN) $(INC) $(DEFS) -MMD -c $< -o $@

lib = $(LIBSRC:%.c=$(B)/$(1)/%.o)

# The product is the stripped copy of lambdo.full, whose symbols bench/callgrind-guard needs
# to tell TLS handshakes apart from the steady state: the same code is measured as ships.
$(B)/musl/lambdo.full: $(B)/musl/lambdo.o $(call lib,musl) $(MUSL_DEPS)
	$(MUSL_CC) $(MUSL_CF) $(MUSL_OWN) -flto-partition=one $(filter-out -s,$(MUSL_LD)) $^ -o $@
$(B)/musl/lambdo: $(B)/musl/lambdo.full
	strip -o $@ $<
$(B)/musl/tool_%: $(B)/musl/tests/tool_%.o $(call lib,musl) $(MUSL_DEPS)
	$(MUSL_CC) $(MUSL_CF) $(MUSL_OWN) -flto-partition=one $(MUSL_LD) $^ -o $@

$(B)/glibc/lambdo: $(B)/glibc/lambdo.o $(call lib,glibc) $(GLIBC_DEPS)
	$(GLIBC_CC) $(GLIBC_CF) $^ -o $@
$(B)/asan/lambdo: $(B)/asan/lambdo.o $(call lib,asan) $(GLIBC_DEPS)
	$(ASAN_CC) $(ASAN_CF) $^ -o $@
$(B)/tsan/lambdo: $(B)/tsan/lambdo.o $(call lib,tsan) $(B)/glibc/libbearssl.a $(B)/tsan/cjson.o
	$(ASAN_CC) $(TSAN_CF) $^ -o $@
$(B)/glibc/t_%: $(B)/glibc/tests/t_%.o $(call lib,glibc) $(GLIBC_DEPS)
	$(GLIBC_CC) $(GLIBC_CF) $^ -lcmocka -o $@
$(B)/glibc/tool_%: $(B)/glibc/tests/tool_%.o $(call lib,glibc) $(GLIBC_DEPS)
	$(GLIBC_CC) $(GLIBC_CF) $^ -o $@
$(B)/asan/t_%: $(B)/asan/tests/t_%.o $(call lib,asan) $(GLIBC_DEPS)
	$(ASAN_CC) $(ASAN_CF) $^ -lcmocka -o $@
$(B)/asan/tool_%: $(B)/asan/tests/tool_%.o $(call lib,asan) $(GLIBC_DEPS)
	$(ASAN_CC) $(ASAN_CF) $^ -o $@
$(B)/fuzz/fuzz_%: $(B)/fuzz/tests/fuzz_%.o $(call lib,fuzz) $(GLIBC_DEPS)
	$(ASAN_CC) $(FUZZ_CF) $^ -o $@

clean:
	rm -rf $(B) lambdo

-include $(shell find $(B) -name '*.d' 2>/dev/null)
