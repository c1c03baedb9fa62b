# trackd build. Plain make; every knob can be overridden on the command line:
#   make CC=clang OPT=-O0        make SANITIZE=address,undefined        make WERROR=1
# llhttp is compiled from Debian's node-llhttp package at build time (never copied into the repo).

CC       ?= cc
OPT      ?= -O2 -g
CFLAGS   ?=
LDFLAGS  ?=
SANITIZE ?=
WERROR   ?=
LLHTTP_SRC ?= /usr/share/llhttp
LLHTTP_INC ?= /usr/share/include/llhttp
BIN      ?= bin

PKGS     := libuv jansson libbsd-overlay zlib
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

ifneq ($(SANITIZE),)
BUILD    ?= build/san
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else
BUILD    ?= build/rel
SANFLAGS :=
endif

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter $(if $(WERROR),-Werror)
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) $(SANFLAGS) -Iinclude -isystem $(LLHTTP_INC) $(PKG_CFLAGS) -MMD -MP $(CFLAGS)
# llhttp is generated code: compile it with our flags but not our warnings. LLHTTP_STRICT_MODE
# selects the parser that checks the CRLF after chunk data (the default one skips two bytes
# unchecked: a request-smuggling hazard, tests/blackbox/conformance.test.mjs).
LLHTTP_CFLAGS := -std=c11 -DLLHTTP_STRICT_MODE=1 $(OPT) $(SANFLAGS) -I$(LLHTTP_INC) -w $(CFLAGS)
ALL_LDFLAGS := $(SANFLAGS) $(LDFLAGS)

MAINS    := src/main.c src/trackctl.c src/trackbench.c
LIB_SRC  := $(filter-out $(MAINS),$(wildcard src/*.c))
LIB_ASM  := $(wildcard src/*.S)
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/%.o) $(LIB_ASM:src/%.S=$(BUILD)/%.o)
LLHTTP_OBJ := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
UNIT_SRC := $(wildcard tests/unit/*.c)
UNIT_OBJ := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%.o)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)

.PHONY: all deps deps-test run test test-unit test-valgrind test-blackbox test-browser test-san bench fuzz clean format check-format

all: $(BIN)/trackd $(BIN)/trackctl $(BIN)/trackbench

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

$(BIN)/trackd: $(BUILD)/main.o $(LIB_OBJ) $(LLHTTP_OBJ) | $(BIN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BIN)/trackctl: $(BUILD)/trackctl.o $(LIB_OBJ) $(LLHTTP_OBJ) | $(BIN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BIN)/trackbench: $(BUILD)/trackbench.o $(LIB_OBJ) $(LLHTTP_OBJ) | $(BIN)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/unit-tests: $(UNIT_OBJ) $(LIB_OBJ) $(LLHTTP_OBJ)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/bench/%: bench/%.c $(LIB_OBJ) $(LLHTTP_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: src/%.S
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) $(OPT) -c -o $@ $<

$(BUILD)/tests/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -c -o $@ $<

# Rebuilt when the Makefile changes: its flags (LLHTTP_STRICT_MODE) decide which parser it is.
$(BUILD)/llhttp/%.o: $(LLHTTP_SRC)/%.c Makefile
	@mkdir -p $(dir $@)
	$(CC) $(LLHTTP_CFLAGS) -c -o $@ $<

$(BIN):
	mkdir -p $@

# `make run`: install what is missing, build, start trackd behind nginx in the foreground.
run: deps all
	scripts/run.sh

# `make test`: everything CI checks. Unit tests and black-box tests, first against the optimised
# build (with -Werror), then against an ASan+UBSan build.
test: deps-test
	$(MAKE) WERROR=1 all $(BUILD)/unit-tests build/fault_shim.so
	$(MAKE) test-unit
	$(MAKE) test-valgrind
	$(MAKE) test-blackbox
	$(MAKE) test-browser
	$(MAKE) test-san
	$(MAKE) fuzz FUZZ_TIME=$(TEST_FUZZ_TIME)

test-unit: $(BUILD)/unit-tests
	$(BUILD)/unit-tests

# The unit tests under valgrind: memory errors and definite leaks fail the test they happen in.
test-valgrind: $(BUILD)/unit-tests build/fault_shim.so
	valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite $(BUILD)/unit-tests

test-blackbox: all build/fault_shim.so
	scripts/blackbox.sh $(BIN)

test-browser: all
	scripts/browser-tests.sh $(BIN)

test-san:
	$(MAKE) SANITIZE=address,undefined BIN=build/san/bin WERROR=1 build/san/bin/trackd build/san/bin/trackctl build/san/bin/trackbench build/san/unit-tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 build/san/unit-tests
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 scripts/blackbox.sh build/san/bin

bench: all $(BENCH_BIN)
	bench/run.sh

FUZZ_TIME ?= 60
# Per target inside `make test` (seven targets, two at a time: keeps the suite under 15 minutes).
TEST_FUZZ_TIME ?= 30
FUZZ_JOBS ?= $(shell nproc 2>/dev/null || echo 1)
fuzz:
	FUZZ_JOBS=$(FUZZ_JOBS) scripts/fuzz.sh $(FUZZ_TIME)

format:
	clang-format -i src/*.c include/trackd/*.h tests/unit/*.c bench/*.c fuzz/*.c

check-format:
	clang-format --dry-run --Werror src/*.c include/trackd/*.h tests/unit/*.c

clean:
	rm -rf build bin

# LD_PRELOAD fault injection (fsync EIO, ENOSPC, syscall trace) used by tests/unit/test_log.c.
build/fault_shim.so: tests/fault/fault_shim.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -shared -fPIC -o $@ $< -ldl
$(BUILD)/unit-tests: | build/fault_shim.so

-include $(wildcard $(BUILD)/*.d $(BUILD)/tests/*.d)
